"""Sweep a trained run over beta (or CFG scale) and score it against the exact target.

For every beta: the mean energy of ``n`` samples against the exact target's, the TV distance
between hue histograms with its finite-sample floor. A CFG run is first swept over guidance
scales; for every beta the scale whose mean energy matches the exact target's is found by
linear interpolation and sampled (Lemma 4.10 in practice: matching the mean energy does not
make CFG sample the target). For the unguided sampler (beta 0 / scale 0): MMD to the data
against its noise floor, and the nearest-training-image check.
"""

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax.random as jr
import numpy as np

from .._experiment import Progress, RunDir, Task
from ._config import ImageConfig, check_guidance
from ._data import TrainingSet, batched_energy, image_classes, resolve_energy, training_set
from ._metrics import energy_summary, mmd_with_floor, nearest_neighbour
from ._run import Run, generate, time_generation
from ._target import exact_target, histogram, tv_distance

CFG_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
STRIP = 8  # samples shown per row of the figure


def default_betas(cfg: ImageConfig) -> Sequence[float]:
    """The sweep's betas: 0, 1, 3, 10 capped at beta_max (or the run's fixed beta)."""
    if cfg.guidance == "beta" and not cfg.beta_input:
        return (float(cfg.beta),)  # type: ignore[arg-type]
    return tuple(b for b in (0.0, 1.0, 3.0, 10.0) if b <= cfg.beta_max)


def _score(run: Run, ts: TrainingSet, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _scale_curve(run: Run, ts: TrainingSet, key, n: int, scales, task: Task) -> list[dict]:
    """A cfg run's mean energy at every guidance scale (what `match_scale` interpolates)."""
    curve = []
    for j, w in enumerate(scales):
        imgs = generate(run, jr.fold_in(key, 1000 + j), n, scale=w)
        e, _ = _score(run, ts, imgs)
        curve.append({"scale": float(w), "mean_energy": float(e.mean())})
        task.advance(step=f"cfg scale {w:g}")
    return curve


def _at_beta(run: Run, ts: TrainingSet, key, n: int, b: float, curve, seed: int):
    """Sample at ``b`` (a cfg run: at the scale matching the exact target's mean energy)
    and score the samples; returns the record, the figure's strip and the images."""
    cfg = run.cfg
    target = exact_target(ts.energy, ts.classes, b, cfg.n_bins)
    rec: dict[str, Any] = {"beta": float(b)}
    if cfg.guidance == "scale":
        w = match_scale(
            [c["scale"] for c in curve], [c["mean_energy"] for c in curve], target.mean_energy
        )
        rec["cfg_scale"] = w
        imgs = generate(run, key, n, scale=w)
    else:
        imgs = generate(run, key, n, beta=b)
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
    strip = {"beta": b, "images": imgs[:STRIP], "hist": hist, "target": target.hist}
    if "cfg_scale" in rec:
        strip["scale"] = rec["cfg_scale"]
    return rec, strip, imgs


def _guidance(cfg: ImageConfig, value: float) -> tuple[float | None, float | None]:
    """``(beta, scale)`` with ``value`` in the place that steers this run."""
    return (None, value) if cfg.guidance == "scale" else (value, None)


def sweep(
    run: Run,
    *,
    betas: Sequence[float] | None = None,
    n: int = 256,
    scales: Sequence[float] = CFG_SCALES,
    seed: int = 0,
    data: TrainingSet | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``run`` at every beta against the exact target; returns a JSON-able summary.

    Also returns, under ``"_strips"`` (not JSON), ``STRIP`` sample images per beta and the
    histograms, for `sweep_figure`. ``progress`` shows a bar over the sample sets.
    """
    cfg = run.cfg
    if n < 2:
        raise ValueError(f"n must be >= 2 (a standard error needs two samples), got {n}.")
    bs = list(default_betas(cfg) if betas is None else betas)
    if cfg.guidance == "beta":  # a cfg run's betas are targets, matched by a scale
        for b in bs:
            check_guidance(cfg, b)
    t0 = time.perf_counter()
    ts = training_set(cfg) if data is None else data
    key = jr.PRNGKey(seed)
    n_steps = (len(scales) if cfg.guidance == "scale" else 0) + len(bs) + 1
    with Progress(progress) as bar:
        task = bar.task("sweep", n_steps)
        curve = _scale_curve(run, ts, key, n, scales, task) if cfg.guidance == "scale" else []
        records, strips, unguided = [], [], None
        for i, b in enumerate(bs):
            rec, strip, imgs = _at_beta(run, ts, jr.fold_in(key, i), n, b, curve, seed)
            records.append(rec)
            strips.append(strip)
            if b == 0.0 and cfg.beta_input:
                unguided = imgs
            task.advance(step=f"beta {b:g}")
        quality: dict[str, Any] = {"samples_beta": 0.0}
        if unguided is None and (cfg.guidance == "scale" or cfg.beta_input):
            b0, w0 = _guidance(cfg, 0.0)
            unguided = generate(run, jr.fold_in(key, 999), n, beta=b0, scale=w0)
        elif unguided is None:  # a fixed-beta run has only its guided sampler
            unguided, quality["samples_beta"] = imgs, float(bs[-1])
        if len(ts) >= 3 * len(unguided):
            quality["mmd"] = mmd_with_floor(unguided, ts.images, seed=seed)
        quality["nearest_neighbour"] = nearest_neighbour(unguided, ts.images, ts.held_out)
        bt, wt = _guidance(cfg, 1.0 if cfg.guidance == "scale" else bs[-1])
        timing = {"sample_64_s": time_generation(run, 64, beta=bt, scale=wt), "sweep_s": 0.0}
        task.advance(step="timing")
    timing["sweep_s"] = time.perf_counter() - t0
    return {
        "config": cfg.to_json(),
        "train": run.info,
        "n": n,
        "records": records,
        "cfg_scale_curve": curve,
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


def write_sweep(summary: dict[str, Any], out: str | os.PathLike) -> None:
    """Write ``sweep.json``, ``sweep.md`` and ``sweep.png`` into ``out`` (atomically)."""
    from ._plot import sweep_figure

    rd = RunDir(out)
    rd.write_json("sweep.json", {k: v for k, v in summary.items() if not k.startswith("_")})
    rd.write_text("sweep.md", sweep_markdown(summary))
    cfg = summary["config"]
    title = (
        f"{cfg['method']} on {cfg['data']} {cfg['size']}x{cfg['size']}: "
        f"target hue {cfg['target_hue']:g}°"
    )
    sweep_figure(summary["_strips"], rd / "sweep.png", title=title)
