"""Run folders: atomic writes, staged output folders, DONE markers, unwritable outputs."""

from __future__ import annotations

import os

import pytest

from pipelines.errors import RareganError
from pipelines.runs import atomic_write_text, ensure_writable, is_done, mark_done, staged_dir


def test_staged_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staged_dir(out, "test") as tmp:
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with staged_dir(out, "test") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-way")
    assert (out / "a.txt").read_text() == "one", "a failed write must not touch the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temp folders left behind"
    with staged_dir(out, "test") as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == [".raregan-output", "b.txt"]


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


@pytest.mark.parametrize("make", ["file", "folder with a file", "other command's output"])
def test_staged_dir_never_replaces_what_it_did_not_write(tmp_path, make):
    out = tmp_path / "out"
    if make == "file":
        out.write_text("my notes")
    elif make == "folder with a file":
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    else:
        with staged_dir(out, "filters") as tmp:
            (tmp / "a.txt").write_text("one")
    before = {p.name: p.read_bytes() for p in ([out] if out.is_file() else out.iterdir())}
    with pytest.raises(RareganError, match="refusing to replace"):
        with staged_dir(out, "synth") as tmp:
            (tmp / "b.txt").write_text("two")
    after = {p.name: p.read_bytes() for p in ([out] if out.is_file() else out.iterdir())}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temp folders left behind"


def test_staged_dir_takes_an_empty_folder_and_follows_the_umask(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mask = os.umask(0o022)
    try:
        with staged_dir(out, "test") as tmp:
            (tmp / "a.txt").write_text("one")
    finally:
        os.umask(mask)
    assert (out / "a.txt").read_text() == "one"
    assert out.stat().st_mode & 0o777 == 0o755


def test_file_lock_is_exclusive_and_leaves_no_file(tmp_path):
    from pipelines.runs import file_lock

    path = tmp_path / "locks" / "cell.lock"
    with file_lock(path) as held:
        assert held and path.exists()
        with file_lock(path, wait=False) as other:  # another open file: flock conflicts
            assert other is False
    assert not path.exists()
    with file_lock(path, wait=False) as again:
        assert again
