"""Figures: sample grids and the beta sweep (samples per beta beside hue histograms).

matplotlib is imported inside the functions (Agg backend), so ``import ewfm.images`` stays light.
"""

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._experiment import atomic_path

HUE_LABELS_EVERY = 3  # label every third 30-degree bin


def tile(images: np.ndarray, ncol: int = 8, *, pad: int = 1, scale: int = 4) -> np.ndarray:
    """Tile ``[n, H, W, 3]`` images into one ``[rows, cols, 3]`` array (white gaps, upscaled)."""
    n, h, w, _ = images.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    big = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        big[y : y + h, x : x + w] = images[i]
    return np.repeat(np.repeat(big, scale, axis=0), scale, axis=1)


def save_grid(images: np.ndarray, path: str | os.PathLike, ncol: int = 8) -> None:
    """Save images ``[n, H, W, 3]`` in [0, 1] as one PNG grid (atomically)."""
    import matplotlib.image as mpimg

    with atomic_path(path) as tmp:
        mpimg.imsave(tmp, np.clip(tile(images, ncol), 0.0, 1.0))


def _bin_colours(n_bins: int) -> list[Any]:
    from ._data import hsv_to_rgb

    hues = np.arange(n_bins) * 360.0 / n_bins
    rgb = hsv_to_rgb(hues, np.full(n_bins, 0.8), np.full(n_bins, 0.9))
    return [tuple(c) for c in rgb] + [(0.6, 0.6, 0.6)]


def sweep_figure(rows: list[dict[str, Any]], path: str | os.PathLike, *, title: str = "") -> None:
    """One row per beta: sample images, then the hue histogram of the samples (dots) over
    the exact target's (bars coloured by hue; the last, grey bar is 'achromatic')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = len(rows)
    fig, axes = plt.subplots(
        n_rows,
        2,
        figsize=(11, 1.7 * n_rows + 0.6),
        gridspec_kw={"width_ratios": [2.4, 1]},
        squeeze=False,
    )
    for ax_img, ax_h, row in zip(axes[:, 0], axes[:, 1], rows, strict=True):
        ax_img.imshow(
            np.clip(tile(row["images"], len(row["images"]), scale=1), 0, 1), interpolation="nearest"
        )
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        label = f"β = {row['beta']:g}"
        if "scale" in row:
            label += f"\nw = {row['scale']:.2f}"
        ax_img.set_ylabel(label, rotation=0, ha="right", va="center")
        k = len(row["target"])
        x = np.arange(k)
        ax_h.bar(
            x,
            row["target"],
            color=_bin_colours(k - 1),
            edgecolor="k",
            linewidth=0.4,
            label="exact target",
        )
        ax_h.plot(x, row["hist"], "ko", ms=3.5, label="samples")
        ax_h.set_ylim(0, max(0.05, 1.1 * float(max(np.max(row["target"]), np.max(row["hist"])))))
        ticks = [*range(0, k - 1, HUE_LABELS_EVERY), k - 1]
        ax_h.set_xticks(ticks)
        ax_h.set_xticklabels(
            [f"{int(t * 360 / (k - 1))}°" for t in ticks[:-1]] + ["grey"], fontsize=7
        )
        ax_h.tick_params(axis="y", labelsize=7)
    axes[0, 1].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
