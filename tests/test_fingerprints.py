"""What goes into a run's fingerprint (issue #36's bookkeeping): the classes a classifier studies,
the images' pixels (not only the files' byte sizes), not settings that cannot change results; runs
and committed records made before a key was recorded stay current; records say which code made them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.fingerprints import (
    StaleRunError,
    check_fingerprint,
    fingerprint,
    write_fingerprint,
)


@pytest.fixture(scope="module")
def prepared_phantoms(phantom_root, tmp_path_factory):
    from pipelines.data.prepare import DataSpec, prepare

    cache = tmp_path_factory.mktemp("fp-store")
    spec = DataSpec(phantom_root, size=16, cache_dir=cache, studied=("Fracture",))
    return prepare(spec, progress=False)


def _classifier_fp(prepared, cfg, classes):
    from pipelines.classifier.run import classifier_fingerprint

    rows = prepared.train_fraction(100.0, 0, ["Fracture"])
    return classifier_fingerprint(prepared, cfg, rows, 100.0, "none", "cnn5", classes, [])


def test_classifier_fingerprint_names_its_classes_but_not_num_workers(prepared_phantoms):
    from pipelines.config import load_config

    cfg = load_config(None)
    base = _classifier_fp(prepared_phantoms, cfg, ["Fracture"])
    other = _classifier_fp(prepared_phantoms, cfg, ["Fracture", "Edema"])
    assert base["id"] != other["id"], "the classes choose the checkpoint: another classifier"
    assert base["settings"]["classes"] == ["Fracture"]
    cfg["classify"]["num_workers"] = 3
    assert _classifier_fp(prepared_phantoms, cfg, ["Fracture"])["id"] == base["id"]
    assert not any(k.endswith("num_workers") for k in base["settings"])


def _bmp(path, value):
    pixels = np.full((20, 20), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="BMP")  # uncompressed: same size for any content


def test_pixel_key_sees_a_changed_image_of_the_same_byte_size(tmp_path):
    from pipelines.data.store import build_store

    paths = [tmp_path / f"{i}.bmp" for i in range(3)]
    for i, path in enumerate(paths):
        _bmp(path, 40 * i)
    before = build_store([str(p) for p in paths], 8, cache_dir=tmp_path / "c1", progress=False)
    size = paths[1].stat().st_size
    _bmp(paths[1], 200)
    assert paths[1].stat().st_size == size
    after = build_store([str(p) for p in paths], 8, cache_dir=tmp_path / "c2", progress=False)
    assert before.content_key == after.content_key  # byte sizes alone cannot tell them apart
    assert before.pixel_key != after.pixel_key
    meta = after.data_path.with_suffix(".json")
    assert json.loads(meta.read_text())["pixels"] == after.pixel_key  # kept: hashed once
    again = build_store([str(p) for p in paths], 8, cache_dir=tmp_path / "c2", progress=False)
    assert again.pixel_key == after.pixel_key  # reopened from the cache: same content, same key
    kept = json.loads(meta.read_text())
    meta.write_text(json.dumps({**kept, "pixels": "not-this-store"}))  # what is kept is read …
    reopened = build_store([str(p) for p in paths], 8, cache_dir=tmp_path / "c2", progress=False)
    assert reopened.pixel_key == "not-this-store"
    after.data_path.unlink()  # … until the store is rebuilt: its JSON is written afresh
    rebuilt = build_store([str(p) for p in paths], 8, cache_dir=tmp_path / "c2", progress=False)
    assert rebuilt.pixel_key == after.pixel_key


def test_fingerprints_of_gans_and_classifiers_carry_the_pixels(prepared_phantoms):
    from pipelines.config import load_config
    from pipelines.gan.run import gan_fingerprint

    cfg = load_config(None)
    pixels = prepared_phantoms.store.pixel_key
    assert _classifier_fp(prepared_phantoms, cfg, ["Fracture"])["settings"]["pixels"] == pixels
    rows = prepared_phantoms.positives("Fracture", 100.0, 0)
    gan = gan_fingerprint(prepared_phantoms, cfg, ["Fracture"], 100.0, rows)
    assert gan["settings"]["pixels"] == pixels


def test_runs_made_before_a_key_was_recorded_stay_current_and_others_do_not(tmp_path):
    from pipelines.fingerprints import differing_keys

    old = fingerprint(classify={"epochs": 2, "num_workers": 0}, data="d")  # as made before
    now = fingerprint(classify={"epochs": 2}, data="d", pixels="p", classes=["A"])
    assert old["id"] != now["id"] and differing_keys(old["settings"], now["settings"]) == []
    run = tmp_path / "run"
    run.mkdir()
    write_fingerprint(run, old)
    (run / "DONE").write_text("{}")
    assert check_fingerprint(run, now) is True
    # a run that recorded the key is compared on it
    write_fingerprint(run, fingerprint(classify={"epochs": 2}, data="d", pixels="q", classes=["A"]))
    with pytest.raises(StaleRunError, match="pixels: q → p"):
        check_fingerprint(run, now)
    # and settings that count still count
    write_fingerprint(run, fingerprint(classify={"epochs": 3}, data="d"))
    with pytest.raises(StaleRunError, match="classify.epochs: 3 → 2"):
        check_fingerprint(run, now)


def test_records_say_which_code_made_them(tmp_path):
    from pipelines.experiment.records import code_version, read_record, write_record

    record = {"id": "cell-a", "kind": "classify", "fingerprint": {"id": "x", "settings": {}}}
    write_record(tmp_path, record)
    made = read_record(tmp_path, "cell-a")
    assert made["code"] == code_version() and made["code"].startswith("0.")
    if (Path(__file__).resolve().parents[1] / ".git").exists():
        assert "+g" in made["code"]  # a git checkout: its commit is named
    assert json.loads((tmp_path / "cell-a.json").read_text())["code"] == made["code"]
