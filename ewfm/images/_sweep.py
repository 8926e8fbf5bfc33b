"""Sweep a trained run over beta (or CFG scale) and score it against the exact target.

For every beta: the mean energy of ``n`` samples against the exact target's, the TV distance
between hue histograms with its finite-sample floor. A CFG run is first swept over guidance
scales; for every beta the scale whose mean energy matches the exact target's is found by
linear interpolation and sampled (Lemma 4.10 in practice: matching the mean energy does not
make CFG sample the target). For the unguided sampler (beta 0 / scale 0): MMD to the data
against its noise floor, and the nearest-training-image check.
"""

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax.random as jr
import numpy as np

from .._experiment import write_text_atomic
from ._experiment import (
    ImageRun,
    TrainingSet,
    batched_energy,
    default_betas,
    generate,
    image_classes,
    resolve_energy,
    time_generation,
    training_set,
)
from ._metrics import energy_summary, mmd_with_floor, nearest_neighbour
from ._target import exact_target, histogram, tv_distance

CFG_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
STRIP = 8  # samples shown per row of the figure


def _score(run: ImageRun, ts: TrainingSet, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cfg = run.cfg
    fn = resolve_energy(cfg.energy, cfg.target_hue)
    e = batched_energy(fn, images, (cfg.size, cfg.size, 3))
    return e, image_classes(images, cfg.n_bins)


def match_scale(scales: Sequence[float], energies: Sequence[float], goal: float) -> float:
    """The scale whose (interpolated) mean energy equals ``goal``; clamped to the grid.

    ``energies`` must come from increasing ``scales``; the first crossing is used.
    """
    s, e = np.asarray(scales, float), np.asarray(energies, float)
    for i in range(len(s) - 1):
        lo, hi = sorted((e[i], e[i + 1]))
        if lo <= goal <= hi and e[i] != e[i + 1]:
            return float(s[i] + (goal - e[i]) * (s[i + 1] - s[i]) / (e[i + 1] - e[i]))
    return float(s[int(np.argmin(np.abs(e - goal)))])


def sweep(
    run: ImageRun,
    *,
    betas: Sequence[float] | None = None,
    n: int = 256,
    scales: Sequence[float] = CFG_SCALES,
    seed: int = 0,
    data: TrainingSet | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score ``run`` at every beta against the exact target; returns a JSON-able summary.

    Also returns, under ``"_strips"`` (not JSON), ``STRIP`` sample images per beta and the
    histograms, for `sweep_figure`. ``on_step(label)`` is called after each sample set.
    """
    cfg = run.cfg
    t0 = time.perf_counter()
    ts = training_set(cfg) if data is None else data
    bs = list(default_betas(cfg) if betas is None else betas)
    key = jr.PRNGKey(seed)
    note = on_step or (lambda label: None)
    records, strips = [], []
    scale_curve: list[dict[str, float]] = []
    if cfg.method == "cfg":
        for j, w in enumerate(scales):
            imgs = generate(run, jr.fold_in(key, 1000 + j), n, scale=w)
            e, _ = _score(run, ts, imgs)
            scale_curve.append({"scale": float(w), "mean_energy": float(e.mean())})
            note(f"cfg scale {w:g}")
    unguided = None
    for i, b in enumerate(bs):
        target = exact_target(ts.energy, ts.classes, b, cfg.n_bins)
        rec: dict[str, Any] = {"beta": float(b)}
        if cfg.method == "cfg":
            w = match_scale(
                [c["scale"] for c in scale_curve],
                [c["mean_energy"] for c in scale_curve],
                target.mean_energy,
            )
            rec["cfg_scale"] = w
            imgs = generate(run, jr.fold_in(key, i), n, scale=w)
        else:
            imgs = generate(run, jr.fold_in(key, i), n, beta=b)
        e, cls = _score(run, ts, imgs)
        hist = histogram(cls, cfg.n_bins)
        s = energy_summary(e)
        rec.update(
            mean_energy=s["mean"],
            mean_energy_se=s["se"],
            target_mean_energy=target.mean_energy,
            target_energy_sd_of_mean=target.energy_std / math.sqrt(n),
            tv=tv_distance(hist, target.hist),
            tv_floor=target.tv_floor(n, ts.classes, seed=seed),
            target_ess=target.ess,
        )
        records.append(rec)
        strip = {"beta": b, "images": imgs[:STRIP], "hist": hist, "target": target.hist}
        if cfg.method == "cfg":
            strip["scale"] = rec["cfg_scale"]
        strips.append(strip)
        if b == 0.0 and cfg.beta_input:
            unguided = imgs
        note(f"beta {b:g}")
    quality: dict[str, Any] = {"samples_beta": 0.0}
    if unguided is None and (cfg.method == "cfg" or cfg.beta_input):
        unguided = generate(run, jr.fold_in(key, 999), n, beta=0.0, scale=0.0)
    elif unguided is None:  # a fixed-beta run has only its guided sampler
        unguided, quality["samples_beta"] = imgs, float(bs[-1])
    if len(ts) >= 3 * len(unguided):
        quality["mmd"] = mmd_with_floor(unguided, ts.images, seed=seed)
    quality["nearest_neighbour"] = nearest_neighbour(unguided, ts.images, ts.held_out)
    b_time = None if cfg.method == "cfg" else bs[-1]
    timing = {
        "sample_64_s": time_generation(run, 64, beta=b_time, scale=1.0),
        "sweep_s": 0.0,
    }
    note("timing")
    timing["sweep_s"] = time.perf_counter() - t0
    return {
        "config": cfg.to_json(),
        "train": run.info,
        "n": n,
        "records": records,
        "cfg_scale_curve": scale_curve,
        "quality": quality,
        "timing": timing,
        "_strips": strips,
    }


def sweep_markdown(summary: dict[str, Any]) -> str:
    """A Markdown report of a sweep (tables of the guidance and quality metrics)."""
    cfg = summary["config"]
    lines = [
        f"# {cfg['method']} on {cfg['data']} {cfg['size']}x{cfg['size']}, target hue "
        f"{cfg['target_hue']:g}",
        "",
        f"{summary['n']} samples per row; exact target = training set reweighted by "
        "exp(-beta E). TV floor = TV of as many exact-target draws.",
        "",
    ]
    cfg_run = cfg["method"] == "cfg"
    head = "| beta | " + ("CFG scale | " if cfg_run else "")
    head += "mean E (± se) | exact target mean E | hue TV | TV floor |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in summary["records"]:
        row = f"| {r['beta']:g} | " + (f"{r['cfg_scale']:.2f} | " if cfg_run else "")
        row += (
            f"{r['mean_energy']:.3f} ± {r['mean_energy_se']:.3f} | "
            f"{r['target_mean_energy']:.3f} | {r['tv']:.3f} | {r['tv_floor']:.3f} |"
        )
        lines.append(row)
    q = summary["quality"]
    lines.append("")
    if "mmd" in q:
        m = q["mmd"]
        lines.append(
            f"Unguided samples vs data: MMD² {m['mmd2']:.4f} (noise floor {m['floor']:.4f}, "
            f"n={int(m['n'])})."
        )
    nn = q["nearest_neighbour"]
    lines.append(
        f"Nearest training image (RMS pixel distance): samples median {nn['sample_median']:.3f}, "
        f"held-out images {nn['held_out_median']:.3f} (ratio {nn['ratio']:.2f}); fraction of "
        f"samples below the held-out 5% quantile: {nn['frac_below_held_out_q05']:.3f}."
    )
    t = summary["timing"]
    tr = summary["train"]
    lines.append(
        f"Training: {tr.get('steps', 0)} steps in {tr.get('train_wall_s', float('nan')):.0f} s "
        f"wall ({tr.get('train_cpu_s', float('nan')):.0f} CPU-s); sampling 64 images: "
        f"{t['sample_64_s']:.1f} s."
    )
    return "\n".join(lines) + "\n"


def write_sweep(summary: dict[str, Any], out: str | Path) -> None:
    """Write ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out`` (atomically)."""
    from ._plot import sweep_figure

    out = Path(out)
    data = {k: v for k, v in summary.items() if not k.startswith("_")}
    write_text_atomic(out / "sweep.json", json.dumps(data, indent=2) + "\n")
    write_text_atomic(out / "sweep.md", sweep_markdown(summary))
    cfg = summary["config"]
    title = (
        f"{cfg['method']} on {cfg['data']} {cfg['size']}x{cfg['size']}: "
        f"target hue {cfg['target_hue']:g}°"
    )
    sweep_figure(summary["_strips"], out / "sweep.png", title=title)
