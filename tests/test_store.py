"""The decode-once store: values equal a direct PIL decode, caching, rebuilds, crash safety, errors."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.data.store import Store, StoreDataset, build_store
from pipelines.errors import RareganError

REPO = Path(__file__).resolve().parents[1]


def kermany(root: Path, n: int) -> list[str]:
    normal = sorted((root / "chest_xray/train/NORMAL").glob("*.jpeg"))[: n // 2]
    pneumonia = sorted((root / "chest_xray/train/PNEUMONIA").glob("*.jpeg"))[: n - n // 2]
    return [str(p) for p in normal + pneumonia]


def knee(root: Path, n: int) -> list[str]:
    return [str(p) for p in sorted((root / "knee_kl/train").glob("*/*.png"))[::50][:n]]


def nih(root: Path, n: int) -> list[str]:
    return [str(p) for p in sorted((root / "nih_chestxray14_1000/images").glob("*.png"))[:n]]


def pil_reference(path: str, size: int) -> np.ndarray:
    """Full decode, PIL's own RGB->L, area resize (the real images are all square)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L").resize((size, size), Image.BOX))


def ref_pad(a: np.ndarray) -> np.ndarray:
    """Pad to a centred square with the mean of the edges the padding touches."""
    h, w = a.shape
    side = max(h, w)
    edges = np.concatenate([a[0], a[-1]] if w > h else [a[:, 0], a[:, -1]]).astype(np.float64)
    fill = edges.mean() if a.dtype != np.uint8 else round(edges.mean())
    out = np.full((side, side), fill, dtype=a.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = a
    return out


def files_in(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.mark.parametrize(
    ("source", "n", "size"),
    [(kermany, 24, 128), (kermany, 18, 32), (knee, 17, 64), (nih, 17, 32)],
)
def test_values_equal_direct_pil_decode(shared_data, tmp_path, source, n, size):
    paths = source(shared_data, n)
    store = build_store(paths, size, cache_dir=tmp_path, workers=2, progress=False)
    assert store.built and store.array.shape == (n, 1, size, size)
    assert store.array.dtype == np.uint8
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(store[i][0], pil_reference(p, size), err_msg=p)
    crop = build_store(paths[:3], size, resize="crop", cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(crop.array, store.array[:3])  # square images: same geometry


def test_big_jpeg_draft_stays_close_to_full_decode(shared_data, tmp_path):
    src = Image.open(kermany(shared_data, 2)[0]).convert("L").resize((1024, 1280), Image.BICUBIC)
    path = tmp_path / "big.jpeg"
    src.save(path, quality=92)
    store = build_store([str(path)], 64, resize="crop", cache_dir=tmp_path / "c", progress=False)
    with Image.open(path) as im:
        full = np.asarray(im.convert("L").resize((64, 64), Image.BOX, box=(0, 128, 1024, 1152)))
    diff = np.abs(store[0][0].astype(int) - full)
    assert diff.mean() < 0.5 and diff.max() <= 8


def test_modes_and_mixed_sizes(shared_data, tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 60), dtype=np.uint8)
    rgb = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (36, 36, 4), dtype=np.uint8)
    deep = rng.integers(1000, 4000, (32, 48), dtype=np.uint16)
    wide = rng.integers(0, 256, (50, 80), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    Image.fromarray(deep).save(tmp_path / "i16.png")
    Image.fromarray(deep.astype(np.int32) * 1000).save(tmp_path / "i32.tif")
    Image.fromarray(wide).save(tmp_path / "wide.jpeg", quality=95)
    names = ["l.png", "rgb.png", "rgba.png", "p.png", "i16.png", "i32.tif", "wide.jpeg"]
    paths = [str(tmp_path / f) for f in names] + kermany(shared_data, 1) + nih(shared_data, 1)
    assert Image.open(paths[4]).mode == "I;16" and Image.open(paths[5]).mode == "I"
    store = build_store(paths, 32, cache_dir=tmp_path / "c", progress=False)

    def resized(a: np.ndarray) -> np.ndarray:
        if a.dtype == np.uint8:
            return np.asarray(Image.fromarray(ref_pad(a)).resize((32, 32), Image.BOX))
        out = Image.fromarray(ref_pad(a).astype(np.float32), "F").resize((32, 32), Image.BOX)
        return np.clip(np.rint(np.asarray(out)), 0, 255).astype(np.uint8)

    as_l = [np.asarray(Image.open(p).convert("L")) for p in paths[:4]]
    scaled = (deep - deep.min()) * (255.0 / (deep.max() - deep.min()))
    expected = [resized(a) for a in as_l] + [resized(scaled), resized(scaled)]
    expected += [resized(np.asarray(Image.open(paths[6]).convert("L")))]
    expected += [pil_reference(p, 32) for p in paths[7:]]
    np.testing.assert_array_equal(as_l[2], np.asarray(Image.fromarray(rgba[..., :3]).convert("L")))
    for i, want in enumerate(expected):
        got = store[i][0].astype(int)
        tol = 1 if i in (4, 5) else 0  # 16/32-bit: float32 vs float64 rounding
        assert np.abs(got - want).max() <= tol, paths[i]


def test_pad_and_crop_geometry(tmp_path):
    band = np.repeat(np.array([0, 200, 100], dtype=np.uint8), 30)  # thirds: 0 | 200 | 100
    wide = np.tile(band, (30, 1))  # 30 rows x 90 columns
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(np.ascontiguousarray(wide.T)).save(tmp_path / "tall.png")
    paths = [str(tmp_path / "wide.png"), str(tmp_path / "tall.png")]
    crop = build_store(paths, 9, resize="crop", cache_dir=tmp_path / "c", progress=False)
    assert (crop.array == 200).all()  # only the middle third survives
    pad = build_store(paths, 9, resize="pad", cache_dir=tmp_path / "c", progress=False)
    row = np.repeat([0, 200, 100], 3)
    want = np.full((9, 9), 100)  # fill = mean of the padded edges = 100
    want[3:6] = row
    np.testing.assert_array_equal(pad[0][0], want)
    np.testing.assert_array_equal(pad[1][0], want.T)


def test_reopen_hits_cache_and_inputs_rebuild(shared_data, tmp_path):
    for p in kermany(shared_data, 3):
        shutil.copy2(p, tmp_path / Path(p).name)
    paths = sorted(str(p) for p in tmp_path.glob("*.jpeg"))
    cache = tmp_path / "cache"
    first = build_store(paths, 32, cache_dir=cache, progress=False)
    stamp = first.data_path.stat().st_mtime_ns
    again = build_store(paths, 32, cache_dir=cache, progress=False)
    assert not again.built and again.key == first.key
    assert again.data_path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.array, first.array)
    assert again.index_of(Path(paths[1])) == 1 and len(again) == 3

    st = os.stat(paths[1])
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = build_store(paths, 32, cache_dir=cache, progress=False)
    assert touched.built and touched.key != first.key
    resized = build_store(paths, 48, cache_dir=cache, progress=False)
    assert resized.built and resized.array.shape == (3, 1, 48, 48)
    reordered = build_store(paths[::-1], 32, cache_dir=cache, progress=False)
    assert reordered.built and reordered.key != touched.key


def test_interrupted_build_leaves_nothing(shared_data, tmp_path, monkeypatch):
    paths = kermany(shared_data, 6)
    calls = {"n": 0}
    resize = Image.Image.resize

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return resize(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", interrupting)
    with pytest.raises(KeyboardInterrupt):
        build_store(paths, 32, cache_dir=tmp_path, workers=1, progress=False)
    assert files_in(tmp_path) == []
    monkeypatch.undo()
    assert build_store(paths, 32, cache_dir=tmp_path, progress=False).built


KILLER = """
import os, signal, sys
from pipelines.data.store import build_store
real, seen = os.replace, []
def replace(a, b):
    seen.append(b)
    if len(seen) == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    real(a, b)
os.replace = replace
build_store(sys.argv[3:], 32, cache_dir=sys.argv[2], workers=1, progress=False)
"""


def test_killed_build_is_not_a_store_and_next_call_rebuilds(shared_data, tmp_path):
    paths = kermany(shared_data, 4)
    procs = {}
    for kill_at in (1, 2):  # SIGKILL just before the data commit / just before the json commit
        cache = tmp_path / f"cache{kill_at}"
        args = [sys.executable, "-c", textwrap.dedent(KILLER), str(kill_at), str(cache), *paths]
        procs[cache] = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE)
    for cache, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -9, err.decode()
        left = files_in(cache)
        assert not any(f.endswith(".json") for f in left) and any(".tmp-" in f for f in left)
        store = build_store(paths, 32, cache_dir=cache, progress=False)
        assert store.built
        np.testing.assert_array_equal(store[2][0], pil_reference(paths[2], 32))
        assert files_in(cache) == [f"{store.key}.json", f"{store.key}.u8"]  # stale temps cleaned


BUILDER = """
import sys
from pipelines.data.store import build_store
store = build_store(sys.argv[2:], 32, cache_dir=sys.argv[1], workers=1, progress=False)
print(int(store.built), store.array.sum())
"""


def test_concurrent_builds_decode_once_and_spare_other_machines_temps(shared_data, tmp_path):
    """Two processes asking for one store at once: one decodes, the other waits and reopens it;
    a build's temp file from another machine (same shared cache) is not taken for a dead one."""
    paths = kermany(shared_data, 40)
    cache = tmp_path / "cache"
    cache.mkdir()
    from pipelines.data.store import store_key

    key, _, _ = store_key(paths, 32, "pad")
    foreign = cache / f"{key}.u8.tmp-999999.abcd0123.{'0' * 8}"  # pid 999999 is dead here
    foreign.write_bytes(b"")
    args = [sys.executable, "-c", textwrap.dedent(BUILDER), str(cache), *paths]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].decode().split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(int(built) for built, _ in outs) == [0, 1], "exactly one process decodes"
    assert outs[0][1] == outs[1][1]
    assert files_in(cache) == sorted([f"{key}.json", f"{key}.u8", foreign.name])


def test_missing_file_names_it_and_leaves_nothing(shared_data, tmp_path):
    paths = kermany(shared_data, 2) + [str(tmp_path / "gone.jpeg")]
    with pytest.raises(RareganError, match="gone.jpeg"):
        build_store(paths, 32, cache_dir=tmp_path / "c", progress=False)
    assert files_in(tmp_path / "c") == []


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_corrupt_image_names_it_and_leaves_nothing(shared_data, tmp_path, kind):
    paths = kermany(shared_data, 20)
    data = Path(paths[13]).read_bytes()
    bad = tmp_path / f"{kind}.jpeg"
    bad.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"not an image" * 50)
    paths[13] = str(bad)
    cache = tmp_path / "c"
    with pytest.raises(RareganError, match=rf"{kind}\.jpeg.*fix or remove"):
        build_store(paths, 32, cache_dir=cache, workers=2, progress=False)
    assert files_in(cache) == []


def test_unwritable_cache_dir_and_bad_policy(shared_data, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(RareganError, match="afile"):
        build_store(kermany(shared_data, 1), 32, cache_dir=blocker / "store", progress=False)
    with pytest.raises(RareganError, match="'stretch'"):
        build_store(kermany(shared_data, 1), 32, resize="stretch", cache_dir=tmp_path)


def test_dataset_through_dataloader_workers(shared_data, tmp_path):
    paths = nih(shared_data, 12)
    store = build_store(paths, 32, cache_dir=tmp_path, progress=False)
    rows = np.array([11, 0, 5, 5, 7, 2, 9, 3])
    labels = np.arange(len(rows) * 3, dtype=np.float32).reshape(-1, 3)
    ds = StoreDataset(store, rows, labels)
    blob = pickle.dumps(ds)
    assert len(blob) < store.array.nbytes // 4  # the array itself is not pickled
    assert isinstance(pickle.loads(blob).store, Store)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    images, targets = (torch.cat(t) for t in zip(*loader, strict=True))
    assert images.dtype == torch.uint8 and images.shape == (8, 1, 32, 32)
    np.testing.assert_array_equal(images.numpy(), store.array[rows])
    np.testing.assert_array_equal(targets.numpy(), labels)
    image, empty = StoreDataset(store, rows)[0]
    assert empty.dtype == torch.float32 and empty.numel() == 0
    assert torch.equal(image, torch.from_numpy(store[11]))
