"""Figures of the toy suite (matplotlib, Agg, imported lazily; PNGs written atomically)."""

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .._experiment import atomic_path, require

_LIM = 4.5


def _pyplot():
    matplotlib = require("matplotlib", "plot", "the toy figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def _scatter(ax, x, c=None, title: str = "") -> None:
    x = np.asarray(x)
    if c is None:
        ax.scatter(x[:, 0], x[:, 1], s=0.6, c="#1f4e9c", alpha=0.5, linewidths=0, rasterized=True)
    else:
        ax.scatter(
            x[:, 0], x[:, 1], s=0.6, c=np.asarray(c), cmap="viridis_r", vmin=0.0, vmax=1.0,
            linewidths=0, rasterized=True,
        )  # fmt: skip
    ax.set_xlim(-_LIM, _LIM)
    ax.set_ylim(-_LIM, _LIM)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_run(
    path: str | os.PathLike,
    data: np.ndarray,
    data_energy: np.ndarray,
    target: np.ndarray,
    samples: np.ndarray,
    title: str,
) -> None:
    """Three panels: the data coloured by energy, exact target samples, the model's samples."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    _scatter(axes[0], data, data_energy, "data (colour: energy, yellow = low)")
    _scatter(axes[1], target, None, "exact target pi")
    _scatter(axes[2], samples, None, "model samples")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=110)
    plt.close(fig)


def plot_grid(
    path: str | os.PathLike,
    samples: Mapping[tuple[str, float], np.ndarray],
    datasets: Sequence[str],
    betas: Sequence[float],
    title: str,
    labels: Mapping[tuple[str, float], str] | None = None,
) -> None:
    """A grid of sample clouds: rows data sets, columns beta (the paper's toy figure)."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(datasets), len(betas), figsize=(1.6 * len(betas), 1.6 * len(datasets)), squeeze=False
    )
    for i, d in enumerate(datasets):
        for j, b in enumerate(betas):
            ax = axes[i, j]
            if (d, b) in samples:
                _scatter(ax, samples[(d, b)])
            else:
                ax.set_axis_off()
            if labels and (d, b) in labels:
                ax.text(
                    0.03, 0.03, labels[(d, b)], transform=ax.transAxes, fontsize=6,
                    color="#b00000",
                )  # fmt: skip
            if i == 0:
                ax.set_title(f"beta = {b:g}", fontsize=8)
            if j == 0:
                ax.set_ylabel(d, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path, dpi=80)
    plt.close(fig)


def plot_datasets(
    path: str | os.PathLike, clouds: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    """One panel per data set, points coloured by their energy (yellow = low energy)."""
    plt = _pyplot()
    names = list(clouds)
    fig, axes = plt.subplots(1, len(names), figsize=(1.8 * len(names), 2.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        x, e = clouds[name]
        _scatter(ax, x, e, name)
    fig.tight_layout()
    _save(fig, path, dpi=90)
    plt.close(fig)
