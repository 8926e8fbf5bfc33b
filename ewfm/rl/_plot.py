"""`curves.png` of a run: losses per stage, support Q at renewals, normalised score."""

from pathlib import Path
from typing import Any

from .._experiment import atomic_path


def plot_curves(
    history: list[dict[str, Any]], path: Path, summary: dict[str, Any] | None = None
) -> None:
    """Losses per stage, support Q statistics and normalised score, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(m["stage"] for m in history))  # in the order they ran
    fig, axes = plt.subplots(1, len(stages) + 2, figsize=(4 * (len(stages) + 2), 3.2))
    for ax, s in zip(axes, stages, strict=False):
        ms = [m for m in history if m["stage"] == s]
        ax.plot([m["epoch"] for m in ms], [m["loss"] for m in ms])
        ax.set_title(f"{s} loss")
        ax.set_xlabel("epoch")
        if "critic" in s:
            ax.set_yscale("log")
    qm = [m for m in history if "q_mean" in m]
    ax = axes[len(stages)]
    if qm:
        ax.plot([m["epoch"] for m in qm], [m["q_mean"] for m in qm], "o-", label="mean Q")
        ax2 = ax.twinx()
        ax2.plot(
            [m["epoch"] for m in qm],
            [m["q_std_within"] for m in qm],
            "s--",
            color="C1",
            label="Q std within state",
        )
        ax.legend(loc="upper left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
    ax.set_title("support Q at renewals")
    ax = axes[len(stages) + 1]
    ev = [m for m in history if "score_mean" in m]
    xs = [f"{m['stage'][:4]}{m['epoch']}" for m in ev]
    ys = [m["score_mean"] for m in ev]
    if summary is not None:
        xs.append("final")
        ys.append(summary["score_mean"])
    ax.plot(range(len(ys)), ys, "o-")
    ax.set_xticks(range(len(ys)), xs, rotation=45, fontsize=7)
    ax.set_title("normalised score")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
