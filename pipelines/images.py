"""Writing images and labelled image grids (PNG) for previews, samples and reports."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.errors import RareganError
from pipelines.runs import atomic_write_bytes, ensure_writable


def write_failed(path: Path, err: OSError) -> RareganError:
    """The one-line user error for an image file that could not be written (e.g. a full disk)."""
    return RareganError(
        f"could not write {path}: {err.strerror or err}; free disk space or choose another folder"
    )


def write_png_bytes(path: Path, data: bytes) -> None:
    """Write encoded PNG bytes atomically (no temp file stays); an OSError becomes one user error."""
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise write_failed(path, err) from None


def save_png(path: Path, image: np.ndarray) -> None:
    """Save a (H,W), (1,H,W) gray or (H,W,3) RGB uint8 array as PNG."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    try:
        Image.fromarray(arr.astype(np.uint8)).save(path, format="PNG")
    except OSError as err:
        Path(path).unlink(missing_ok=True)  # no half-written PNG stays behind
        raise write_failed(path, err) from None


def save_grid(
    path: Path,
    rows: Sequence[Sequence[np.ndarray]],
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    title: str = "",
    cell_inches: float = 1.6,
) -> None:
    """A grid figure of gray uint8 images (rows × columns) with titles, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(cell_inches * n_cols, cell_inches * n_rows + (0.4 if title else 0)),
        squeeze=False,
    )
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                img = np.asarray(row[j])
                img = img[0] if img.ndim == 3 and img.shape[0] == 1 else img
                ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            else:
                ax.axis("off")
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and i < len(row_titles):
                ax.set_ylabel(row_titles[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_png_bytes(Path(path), buf.getvalue())


def save_figure(fig, path: Path | str, dpi: int = 110) -> Path:
    """Render a matplotlib Figure with the Agg canvas to PNG (no timestamp) and write it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(path)
    ensure_writable(out.parent)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    write_png_bytes(out, buf.getvalue())
    return out
