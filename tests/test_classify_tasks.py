"""Task losses, scores and predictions against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from classify.tasks import corn_grade_probs, make_task

NAN = float("nan")


def _bce(z: float, y: float, pw: float = 1.0) -> float:
    s = 1 / (1 + math.exp(-z))
    return -(pw * y * math.log(s) + (1 - y) * math.log(1 - s))


def test_masked_bce_equals_hand_computation_and_ignores_nan() -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0], [-0.3, 0.8, 1.5]], requires_grad=True)
    labels = torch.tensor([[1.0, NAN, 0.0], [0.0, 1.0, NAN]])
    task = make_task("multilabel")
    loss = task.loss(logits, labels)
    hand = (_bce(0.5, 1) + _bce(2.0, 0) + _bce(-0.3, 0) + _bce(0.8, 1)) / 4
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 2] == 0
    moved = logits.detach().clone()
    moved[0, 1], moved[1, 2] = 50.0, -50.0  # unknown entries cannot change the loss
    assert task.loss(moved, labels).item() == pytest.approx(hand, rel=1e-6)


def test_pos_weight_and_all_unknown() -> None:
    task = make_task("multilabel", pos_weight=[3.0, 1.0])
    logits = torch.tensor([[0.2, -0.4]])
    labels = torch.tensor([[1.0, 0.0]])
    hand = (_bce(0.2, 1, 3.0) + _bce(-0.4, 0)) / 2
    assert task.loss(logits, labels).item() == pytest.approx(hand, rel=1e-6)
    z = torch.zeros(2, 2, requires_grad=True)
    unknown = task.loss(z, torch.full((2, 2), NAN))
    assert unknown.item() == 0.0 and unknown.requires_grad
    assert torch.allclose(task.scores(logits), torch.sigmoid(logits))
    assert task.predict(logits).tolist() == [[1, 0]]


def test_multiclass_ce_on_argmax_skips_unknown_rows() -> None:
    task = make_task("multiclass")
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.1, 0.2, 3.0], [5.0, 0.0, 0.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [NAN, NAN, NAN]])
    logp = torch.log_softmax(logits, dim=1)
    hand = -(logp[0, 1] + logp[1, 0]) / 2
    assert task.loss(logits, labels).item() == pytest.approx(hand.item(), rel=1e-6)
    assert torch.allclose(task.scores(logits).sum(1), torch.ones(3))
    assert task.predict(logits).tolist() == [1, 2, 0]
    assert make_task("binary").num_outputs(2) == 2


def test_corn_loss_on_hand_example() -> None:
    task = make_task("ordinal")
    assert task.num_outputs(3) == 2 and make_task("ordinal", ordinal="ce").num_outputs(3) == 3
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.4], [-0.5, 2.0]])
    labels = torch.eye(3)  # grades 0, 1, 2
    # task 0 (y > 0) on all three: labels 0, 1, 1; task 1 (y > 1) on grades >= 1: labels 0, 1.
    terms = [_bce(0.3, 0), _bce(1.0, 1), _bce(-0.5, 1), _bce(0.4, 0), _bce(2.0, 1)]
    assert task.loss(logits, labels).item() == pytest.approx(sum(terms) / 5, rel=1e-6)


def test_corn_predict_and_grade_probabilities() -> None:
    p = torch.tensor([[0.9, 0.6], [0.9, 0.4], [0.3, 0.99]])
    logits = torch.log(p / (1 - p))
    task = make_task("ordinal")
    assert task.predict(logits).tolist() == [2, 1, 0]
    probs = corn_grade_probs(logits)
    expected = torch.tensor([[0.1, 0.9 - 0.54, 0.54], [0.1, 0.9 - 0.36, 0.36], [0.7, 0.003, 0.297]])
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(task.scores(logits).sum(1), torch.ones(3))


def test_unknown_task_and_misplaced_pos_weight() -> None:
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        make_task("regression")
    with pytest.raises(ValueError, match="pos_weight applies to multilabel"):
        make_task("multiclass", pos_weight=[1.0])
