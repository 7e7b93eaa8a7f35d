"""Run folders: atomic writes, staged output folders, DONE markers, unwritable outputs."""

from __future__ import annotations

import os

import pytest

from pipelines.errors import RareganError
from pipelines.runs import atomic_write_text, ensure_writable, is_done, mark_done, staged_dir


def test_staged_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-way")
    assert (out / "a.txt").read_text() == "one", "a failed write must not touch the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temp folders left behind"
    with staged_dir(out) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_done_marker_and_atomic_text(tmp_path):
    assert not is_done(tmp_path)
    atomic_write_text(tmp_path / "x.txt", "hello")
    mark_done(tmp_path, {"n": 1})
    assert is_done(tmp_path) and (tmp_path / "x.txt").read_text() == "hello"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_output_under_a_file_is_user_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(RareganError, match="file.txt"):
        ensure_writable(blocker / "out")
