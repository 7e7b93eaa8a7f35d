"""Engine behind every filter: images in chunks, each reflect-padded and cast once for all filters.

A chunk of images is laid out "wide", as (rows, images, columns), so that the vertical pass of a
separable Gaussian is one batched matrix product: each block of T output rows is a banded
T x (T + 2r) matrix times the T + 2r padded rows above it, for every image of the chunk at once.
The horizontal pass is a depthwise convolution that treats each (row, image) pair as a channel of
one row, or for short kernels a sum of shifted slices. uint8 results are rounded by adding 2^23
to float32 values, which rounds half to even as torch.round does and leaves the integer in the
low byte of the float's bits; casting those bits (int32) to uint8 keeps that byte, and is much
faster than a float -> uint8 cast. Views of the scratch buffers are built once per worker, not
per chunk: at 128 px, torch's per-op overhead is a sizeable part of the time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_BLOCK = 8  # output rows per block of the vertical pass
_CHUNK_PIXELS = {"cpu": 1 << 18, "other": 1 << 24}  # pixels per chunk: 16 images of 128 px on CPU
_MIN_CONV_TAPS = 6  # on CPU, shorter kernels sum shifted slices in the horizontal pass
_MAGIC = float(2**23)  # x + 2^23 holds round(x) in its low mantissa bits for 0 <= x < 2^22


@dataclass(frozen=True)
class Blur:
    """Separable Gaussian blur with these taps' sigma and radius."""

    sigma: float
    radius: int


@dataclass(frozen=True)
class Sharpen:
    """Unsharp mask x + amount * (x - blur(x)), clipped to [lo, hi]."""

    sigma: float
    radius: int
    amount: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Erode:
    """Minimum over a size x size window, centred as scipy centres it."""

    size: int


Spec = Blur | Sharpen | Erode


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype: float32/float64 stay as they are, uint8 and half types use float32."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Source indices of a length-n axis padded by symmetric reflection (scipy "reflect")."""
    i = torch.arange(-before, n + after, device=device).remainder(2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_taps(sigma: float, radius: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Normalized 1-D Gaussian taps exp(-t^2 / 2 sigma^2), t = -radius..radius."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def _band(taps: torch.Tensor, rows: int) -> torch.Tensor:
    """(rows, rows + k - 1) matrix whose row t holds the k taps at columns t..t+k-1."""
    k = taps.numel()
    band = taps.new_zeros(rows, rows + k - 1)
    band.as_strided((rows, k), (rows + k, 1)).copy_(taps.expand(rows, k))
    return band


class _Plan:
    """Everything about a run that does not change from chunk to chunk."""

    def __init__(self, x: torch.Tensor, specs: Sequence[Spec]) -> None:
        _, _, self.h, self.w = x.shape
        self.dtype, self.device = x.dtype, x.device
        self.cdtype = compute_dtype(x.dtype)
        self.uint8 = x.dtype == torch.uint8
        self.specs = list(specs)
        self.pad = max(s.size // 2 if isinstance(s, Erode) else s.radius for s in self.specs)
        self.block = min(_BLOCK, self.h)
        self.blocks = -(-self.h // self.block)
        self.rows = self.blocks * self.block + 2 * self.pad  # >= h + 2 pad; extra rows stay 0
        self.wp = self.w + 2 * self.pad
        on_cpu = x.device.type == "cpu"
        self.chunk = max(1, _CHUNK_PIXELS["cpu" if on_cpu else "other"] // (self.h * self.w))
        p, dev = self.pad, x.device
        edge_rows = torch.cat([torch.arange(p), torch.arange(p + self.h, self.h + 2 * p)]).to(dev)
        edge_cols = torch.cat([torch.arange(p), torch.arange(p + self.w, self.w + 2 * p)]).to(dev)
        self.row_dst, self.row_src = edge_rows, reflect_index(self.h, p, p, dev)[edge_rows] + p
        self.col_dst, self.col_src = edge_cols, reflect_index(self.w, p, p, dev)[edge_cols] + p
        self.gauss = [k for k, s in enumerate(self.specs) if not isinstance(s, Erode)]
        first = self.gauss[0] if self.gauss else 0
        # Gaussian outputs next to each other in dest are written with one copy per chunk.
        self.neighbours = self.gauss == list(range(first, first + len(self.gauss)))
        self.bands, self.taps, self.weights = {}, {}, {}
        for k in self.gauss:
            spec = self.specs[k]
            taps = gaussian_taps(spec.sigma, spec.radius, torch.float64, None)
            band = _band(taps.to(self.cdtype), self.block).to(dev)
            self.bands[k] = band.expand(self.blocks, *band.shape)
            if isinstance(spec, Sharpen):
                taps = taps * -spec.amount  # the horizontal pass yields -amount * blur(x)
            self.taps[k] = taps.tolist()
            # oneDNN's depthwise kernel pays off for float32 and longer kernels.
            conv = not on_cpu or (self.cdtype == torch.float32 and len(taps) >= _MIN_CONV_TAPS)
            if conv:
                weight = taps.to(dtype=self.cdtype, device=dev).view(1, 1, 1, -1)
                self.weights[k] = weight.repeat(self.h * self.chunk, 1, 1, 1)


class _Views:
    """A worker's scratch buffers and their views for chunks of c images, built once per c."""

    def __init__(self, plan: _Plan, store: dict[str, torch.Tensor], c: int) -> None:
        p, h, w, wp, dev = plan.pad, plan.h, plan.w, plan.wp, plan.device
        if not store:
            shape = (plan.rows, plan.chunk, wp)
            store["padded"] = torch.zeros(shape, dtype=plan.dtype, device=dev)
            store["work"] = store["padded"]
            if plan.cdtype != plan.dtype:
                store["work"] = torch.zeros(shape, dtype=plan.cdtype, device=dev)
            size = (plan.blocks * plan.block * plan.chunk * wp,)
            store["rows"] = torch.empty(size, dtype=plan.cdtype, device=dev)
            store["out"] = torch.empty(
                (len(plan.gauss), h, plan.chunk, w), dtype=plan.cdtype, device=dev
            )
            store["erode"] = torch.empty((h, plan.chunk, wp), dtype=plan.dtype, device=dev)
        padded, work = store["padded"][:, :c], store["work"][:, :c]
        self.centre_in = padded[p : p + h, :, p : p + w]
        edge = padded[: h + 2 * p]
        self.edge, self.flips = edge, []
        if 0 < p <= min(h, w):  # flipped edge slices; rows first, then whole columns (corners)
            mid = slice(p, p + w)
            self.flips = [
                (edge[:p, :, mid], edge[p : 2 * p, :, mid], 0),
                (edge[p + h :, :, mid], edge[h : h + p, :, mid], 0),
                (edge[..., :p], edge[..., p : 2 * p], 2),
                (edge[..., p + w :], edge[..., w : w + p], 2),
            ]
        self.cast = (work[: h + 2 * p], edge) if work.data_ptr() != padded.data_ptr() else None
        self.centre = work[p : p + h, :, p : p + w]
        rows = store["rows"][: plan.blocks * plan.block * c * wp]
        self.rows = rows.view(plan.blocks, plan.block, c * wp)
        row_view = rows.view(-1, c, wp)[:h]
        self.rhs, self.conv_in, self.weights, self.shifted = {}, {}, {}, {}
        for k in plan.gauss:
            r = plan.specs[k].radius
            self.rhs[k] = work.as_strided(
                (plan.blocks, plan.block + 2 * r, c * wp),
                (plan.block * work.stride(0), work.stride(0), 1),
                work.storage_offset() + (p - r) * work.stride(0),
            )
            if k in plan.weights:
                self.conv_in[k] = row_view.reshape(1, h * c, 1, wp)
                self.weights[k] = plan.weights[k][: h * c]
            else:
                o = p - r
                self.shifted[k] = [row_view[:, :, o + i : o + i + w] for i in range(2 * r + 1)]
        self.out = store["out"][:, :, :c]
        self.targets = list(self.out.unbind(0))
        self.bits = self.out.view(torch.int32) if plan.uint8 else self.out
        erode = store["erode"][:, :c]
        self.erode = {}
        for k, spec in enumerate(plan.specs):
            if not isinstance(spec, Erode):
                continue
            size, lo = spec.size, p - spec.size // 2
            if size == 1:
                self.erode[k] = (padded[p : p + h, :, p : p + w],)
                continue
            # Rows over whole padded rows (long contiguous runs), then columns into dest.
            m = padded[lo : lo + h + size - 1]
            cols = [erode[..., lo + i : lo + i + w] for i in range(size)]
            self.erode[k] = ([m[i : i + h] for i in range(size)], erode, cols)


def _fill(plan: _Plan, views: _Views, src: torch.Tensor) -> None:
    """Copy src (h, c, w) into the centre of the padded buffer and reflect it into the border."""
    views.centre_in.copy_(src)
    if views.flips:
        for dst, source, dim in views.flips:
            dst.copy_(source.flip(dim))
    elif plan.pad:  # reflection repeats (pad wider than the image): gather from index lists
        edge = views.edge
        edge.index_copy_(0, plan.row_dst, edge.index_select(0, plan.row_src))
        edge.index_copy_(2, plan.col_dst, edge.index_select(2, plan.col_src))


def _gaussian(plan: _Plan, views: _Views, k: int, target: torch.Tensor) -> torch.Tensor:
    """Spec k's separable Gaussian of the chunk, (h, c, w); the slice sum is written to target."""
    torch.bmm(plan.bands[k], views.rhs[k], out=views.rows)
    if k in views.weights:
        y = F.conv2d(views.conv_in[k], views.weights[k], groups=views.weights[k].shape[0])
        r, p, h, w = plan.specs[k].radius, plan.pad, plan.h, plan.w
        y = y.view(h, -1, plan.wp - 2 * r)
        return y if r == p else y[:, :, p - r : p - r + w]
    taps, shifted = plan.taps[k], views.shifted[k]
    torch.mul(shifted[0], taps[0], out=target)
    for tap, part in zip(taps[1:], shifted[1:], strict=True):
        target.add_(part, alpha=tap)
    return target


def _erode(views: _Views, k: int, out: torch.Tensor) -> None:
    """Running minimum over shifted views of the padded chunk, written into out (h, c, w)."""
    parts = views.erode[k]
    if len(parts) == 1:
        out.copy_(parts[0])
        return
    rows, buf, cols = parts
    torch.minimum(rows[0], rows[1], out=buf)
    for part in rows[2:]:
        torch.minimum(buf, part, out=buf)
    torch.minimum(cols[0], cols[1], out=out)
    for part in cols[2:]:
        torch.minimum(out, part, out=out)


def _chunk(plan: _Plan, views: _Views, src: torch.Tensor, dest: list[torch.Tensor]) -> None:
    """Run every spec on src (h, c, w); dest[k] is spec k's (h, c, w) output view."""
    _fill(plan, views, src)
    if views.cast is not None:
        views.cast[0].copy_(views.cast[1])
    for j, k in enumerate(plan.gauss):
        spec, target = plan.specs[k], views.targets[j]
        y = _gaussian(plan, views, k, target)
        if isinstance(spec, Sharpen):
            torch.add(y, views.centre, alpha=1.0 + spec.amount, out=target)
            if not (plan.uint8 and (spec.lo, spec.hi) == (0.0, 255.0)):
                target.clamp_(spec.lo, spec.hi)
        elif y is not target:
            target.copy_(y)
    if plan.gauss:
        if plan.uint8:  # round to 2^23 + n, clip n to 0..255; the int32 -> uint8 cast keeps n
            views.out.add_(_MAGIC).clamp_(_MAGIC, _MAGIC + 255.0)
        if plan.neighbours:
            dest[-1].copy_(views.bits)  # (n, h, c, w): every Gaussian output at once
        else:
            for j, k in enumerate(plan.gauss):
                dest[k].copy_(views.bits[j])
    for k in views.erode:
        _erode(views, k, dest[k])


def _work(plan: _Plan, chunks: Iterator[tuple[torch.Tensor, list[torch.Tensor]]]) -> None:
    """Process chunks (source, destination views) with this worker's own buffers."""
    store: dict[str, torch.Tensor] = {}
    views: dict[int, _Views] = {}
    for src, dest in chunks:
        c = src.shape[1]
        if c not in views:
            views[c] = _Views(plan, store, c)
        _chunk(plan, views[c], src, dest)


def _chunks(plan: _Plan, images: torch.Tensor, dest: torch.Tensor):
    """(source, destination views) per chunk, sliced in a few ops for all chunks at once."""
    wide = images.permute(1, 0, 2).split(plan.chunk, dim=1)  # (h, c, w) per chunk
    per_spec = [dest[k].permute(1, 0, 2).split(plan.chunk, dim=1) for k in range(len(plan.specs))]
    if plan.gauss and plan.neighbours:  # one more view: all Gaussian outputs, (n, h, c, w)
        first = plan.gauss[0]
        stacked = dest[first : first + len(plan.gauss)].permute(0, 2, 1, 3)
        per_spec.append(stacked.split(plan.chunk, dim=2))
    for i, src in enumerate(wide):
        yield src, [parts[i] for parts in per_spec]


def run(x: torch.Tensor, specs: Sequence[Spec], dest: torch.Tensor) -> None:
    """Write specs[k] applied to x (N, C, H, W) into dest[k], shaped (len(specs), N * C, H, W).

    On CPU with several torch threads the chunks are shared out to that many Python threads, each
    running its ops on one core (torch releases the GIL inside ops); the thread count is restored.
    """
    n, ch, h, w = x.shape
    if n * ch == 0 or not specs:
        return
    plan = _Plan(x, specs)
    chunks = _chunks(plan, x.reshape(n * ch, h, w), dest)
    threads = torch.get_num_threads() if x.device.type == "cpu" else 1
    workers = min(threads, -(-n * ch // plan.chunk))
    if workers <= 1:
        _work(plan, chunks)
        return
    lock, errors = threading.Lock(), []

    def shared() -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        while True:
            with lock:
                item = next(chunks, None)
            if item is None:
                return
            yield item

    def target() -> None:
        try:
            torch.set_num_threads(1)  # this thread's ops stay on its core: no barrier per op
            _work(plan, shared())
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    pool = [threading.Thread(target=target) for _ in range(workers)]
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        torch.set_num_threads(threads)
    if errors:
        raise errors[0]
