"""Toy runs: train a method, sample it, score it against the exact target; sweeps.

`train` trains what one (data set, method, beta) needs and returns the metrics:

- ``sw2``: sliced Wasserstein-2 distance between ``n_eval`` model samples and ``n_eval``
  exact target samples; ``floor``: the same distance between two independent exact sets
  (what a perfect sampler scores); ``sw2_data``: the model's distance to the unguided data.
- ``mean_energy`` of the samples against ``exact_mean_energy`` under ``pi``.
- ``nll``: mean negative log-likelihood (nats) of ``n_nll`` exact target samples under the
  model (`ewfm.log_likelihood`), lower is better.
- ``ms_per_1000``: wall time of drawing 1,000 samples (compiled, warm).

`sweep` runs data sets × methods × betas, trains every network once (networks that do not
depend on beta are shared across the betas) and writes ``summary.json``, ``summary.md`` and
one figure grid per method (rows data sets, columns beta) plus one of the exact targets.
"""

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._experiment import (
    Progress,
    RunDir,
    Task,
    atomic_path,
    config_from_json,
    config_to_json,
    require,
)
from ._config import (
    DATASETS,
    METHODS,
    RUN_FIELDS,
    SWEEP_BETAS,
    ToyConfig,
    check_betas,
    check_dataset,
    check_method,
)
from ._data import dataset, energy
from ._methods import (
    ToyModel,
    _chunk,
    build_model,
    draw,
    model_log_likelihood,
    networks,
    train_network,
)
from ._target import sample_target, sliced_wasserstein, target_mean_energy


class ToyProblem(eqx.Module):
    """A finite toy data set (uniform ``p`` over its points) with the energies of its points."""

    name: str = eqx.field(static=True)
    x: Float[Array, "n 2"]
    energy: Float[Array, " n"]


def make_problem(name: str, cfg: ToyConfig) -> ToyProblem:
    """The data set ``name`` with ``cfg.n_data`` points, drawn from ``cfg.seed``."""
    check_dataset(name)
    key = jr.fold_in(jr.key(cfg.seed), DATASETS.index(name))
    x = dataset(name, cfg.n_data, key)
    return ToyProblem(name, x, energy(name)(x))


def _target_key(cfg: ToyConfig, problem: ToyProblem, beta: float) -> PRNGKeyArray:
    k = jr.fold_in(jr.key(cfg.seed + 1), DATASETS.index(problem.name))
    return jr.fold_in(k, round(beta * 1000))


def exact_sets(
    problem: ToyProblem, beta: float, cfg: ToyConfig
) -> tuple[Float[Array, "n 2"], Float[Array, "n 2"]]:
    """Two independent sets of ``cfg.n_eval`` exact target samples (fixed per data, beta)."""
    k1, k2 = jr.split(_target_key(cfg, problem, beta))
    return (
        sample_target(problem.x, problem.energy, beta, k1, cfg.n_eval),
        sample_target(problem.x, problem.energy, beta, k2, cfg.n_eval),
    )


def evaluate(
    model: ToyModel, problem: ToyProblem, beta: float, cfg: ToyConfig, key: PRNGKeyArray
) -> tuple[dict[str, float], np.ndarray]:
    """Score ``model`` against the exact target of ``problem`` at ``beta``; also return samples."""
    target, target2 = exact_sets(problem, beta, cfg)
    ks, kt, kd = jr.split(key, 3)
    samples = draw(model, ks, cfg.n_eval).block_until_ready()
    t0 = time.perf_counter()
    draw(model, kt, cfg.n_eval).block_until_ready()
    seconds = time.perf_counter() - t0
    data = problem.x[jr.choice(kd, problem.x.shape[0], (cfg.n_eval,), replace=False)]
    finite = bool(jnp.all(jnp.isfinite(samples)))
    log_lik = model_log_likelihood(model, target[: cfg.n_nll])
    metrics = {
        "sw2": float(sliced_wasserstein(samples, target)) if finite else float("nan"),
        "floor": float(sliced_wasserstein(target, target2)),
        "sw2_data": float(sliced_wasserstein(samples, data)) if finite else float("nan"),
        "mean_energy": float(jnp.mean(energy(problem.name)(samples))),
        "exact_mean_energy": float(target_mean_energy(problem.energy, beta)),
        "nll": float(-jnp.mean(log_lik)),
        "ms_per_1000": 1000.0 * seconds * 1000.0 / cfg.n_eval,
    }
    return metrics, np.asarray(samples)


def _stable_key(cfg: ToyConfig, *parts: str) -> PRNGKeyArray:
    key = jr.key(cfg.seed + 3)
    for p in parts:
        key = jr.fold_in(key, sum((i + 1) * ord(c) for i, c in enumerate(p)))
    return key


class _Trainer:
    """Trains networks on demand, once per (data set, kind, beta), with two progress bars:
    one over the planned runs, one over the training steps of all their networks."""

    def __init__(self, cfg: ToyConfig, bars: Progress, runs: Sequence[tuple[str, str, float]]):
        planned = {(d, *net) for d, m, b in runs for net in networks(m, b, cfg)}
        self.cfg = cfg
        self.cache: dict[tuple[str, str, float], Any] = {}
        self.seconds: dict[tuple[str, str, float], float] = {}
        self.runs: Task = bars.task("runs", len(runs))
        self.steps: Task = bars.task("training", len(planned) * math.prod(_chunk(cfg.steps)))

    def getter(self, problem: ToyProblem) -> Callable[[str, float], Any]:
        def get(kind: str, beta: float) -> Any:
            k = (problem.name, kind, float(beta))
            if k not in self.cache:
                key = _stable_key(self.cfg, problem.name, kind, f"{beta:g}")
                self.steps.label(f"training {problem.name} {kind} beta={beta:g}")
                t0 = time.perf_counter()
                self.cache[k] = train_network(
                    kind, problem.x, problem.energy, beta, self.cfg, key,
                    on_steps=self.steps.advance,
                )  # fmt: skip
                self.seconds[k] = time.perf_counter() - t0
            return self.cache[k]

        return get

    def run(self, problem: ToyProblem, method: str, beta: float) -> tuple[dict[str, Any], Any]:
        """Train what ``method`` needs at ``beta``, then sample and score it."""
        model = build_model(method, beta, self.cfg, self.getter(problem))
        metrics, samples = evaluate(
            model, problem, beta, self.cfg, _stable_key(self.cfg, problem.name, method)
        )
        self.runs.label(f"runs (last: {problem.name} {method} beta={beta:g})")
        self.runs.advance()
        return {"data": problem.name, "method": method, "beta": beta, **metrics}, samples


def _open(out: str | os.PathLike, record: dict[str, Any]) -> RunDir:
    """Check ``out`` before any work, then write its ``config.json``. Running the same
    settings again into the same directory redoes the run; other settings are refused."""
    require("matplotlib", "plot", "writing the toy figures")
    run = RunDir(out)
    run.check(record, resume=run.is_run())
    run.write_json("config.json", record)
    return run


@dataclasses.dataclass
class Run:
    """One (data set, method, beta) run: its config, metrics, and the samples behind them."""

    config: ToyConfig
    metrics: dict[str, Any]
    samples: np.ndarray
    target: np.ndarray
    problem: ToyProblem


def train(
    cfg: ToyConfig | None = None, out: str | os.PathLike | None = None, *, progress: bool = False
) -> Run:
    """Train ``cfg.method`` on ``cfg.data`` at guidance ``cfg.beta``, sample it and score it.

    With ``out``: check the directory first (empty, or a run of the same settings), then
    write ``config.json``, ``metrics.json``, ``samples.npz`` and ``samples.png`` into it
    (`load_run` reads them back).
    """
    cfg = ToyConfig() if cfg is None else cfg
    beta = float(cfg.beta)
    run_dir = None if out is None else _open(out, config_to_json(cfg))
    with Progress(progress, log_lines=True) as bars:
        trainer = _Trainer(cfg, bars, [(cfg.data, cfg.method, beta)])
        problem = make_problem(cfg.data, cfg)
        metrics, samples = trainer.run(problem, cfg.method, beta)
    metrics["train_s"] = sum(trainer.seconds.values())
    target, _ = exact_sets(problem, beta, cfg)
    result = Run(cfg, metrics, samples, np.asarray(target), problem)
    if run_dir is not None:
        _save(result, run_dir)
    return result


def _save(result: Run, run: RunDir) -> None:
    """``metrics.json``, ``samples.npz`` (samples and exact target) and ``samples.png``."""
    from ._plot import plot_run

    m, cfg = result.metrics, result.config
    with atomic_path(run / "samples.npz") as tmp:
        np.savez(tmp, samples=result.samples, target=result.target)
    run.write_json("metrics.json", {**m, "config": config_to_json(cfg)})
    n = min(cfg.n_eval, result.problem.x.shape[0])
    title = (
        f"{m['data']} / {m['method']} / beta={m['beta']:g}: SW2 {m['sw2']:.3f} "
        f"(floor {m['floor']:.3f}), mean E {m['mean_energy']:.3f} "
        f"(exact {m['exact_mean_energy']:.3f})"
    )
    plot_run(
        run / "samples.png",
        np.asarray(result.problem.x[:n]),
        np.asarray(result.problem.energy[:n]),
        result.target,
        result.samples,
        title,
    )


def load_run(out: str | os.PathLike) -> Run:
    """A finished `train` run read back from its directory: config, metrics, samples, exact
    target samples, and the data set (remade from the config)."""
    run = RunDir(out)
    run.require("config.json", "metrics.json", "samples.npz", hint="make it with ewfm toy run.")
    cfg = config_from_json(ToyConfig, run.config_path)
    metrics = {k: v for k, v in run.read_json("metrics.json").items() if k != "config"}
    with np.load(run / "samples.npz") as arrays:
        samples, target = arrays["samples"], arrays["target"]
    return Run(cfg, metrics, samples, target, make_problem(cfg.data, cfg))


def sweep(
    out: str | os.PathLike,
    cfg: ToyConfig | None = None,
    *,
    datasets: Iterable[str] = DATASETS,
    methods: Iterable[str] = tuple(METHODS),
    betas: Iterable[float | str] = SWEEP_BETAS,
    progress: bool = False,
    command: str = "",
) -> dict[str, Any]:
    """Run data sets × methods × betas; write the summary table (JSON, Markdown) and figures.

    ``cfg``'s data, method and beta are not used: the lists take their place. Every name
    and beta is checked before anything is written.
    """
    from ._plot import plot_grid

    ds = [check_dataset(d) for d in datasets]
    ms = [check_method(m) for m in methods]
    bs = list(check_betas(list(betas)))
    cfg = ToyConfig() if cfg is None else cfg
    sizes = {k: v for k, v in config_to_json(cfg).items() if k not in RUN_FIELDS}
    run = _open(out, {**sizes, "datasets": ds, "methods": ms, "betas": bs})
    t_start = time.perf_counter()
    records: list[dict[str, Any]] = []
    clouds: dict[str, dict[tuple[str, float], np.ndarray]] = {m: {} for m in ms}
    targets: dict[tuple[str, float], np.ndarray] = {}
    with Progress(progress, log_lines=True) as bars:
        trainer = _Trainer(cfg, bars, [(d, m, b) for d in ds for b in bs for m in ms])
        for d in ds:
            problem = make_problem(d, cfg)
            for b in bs:
                targets[(d, b)] = np.asarray(exact_sets(problem, b, cfg)[0])
                for m in ms:
                    record, clouds[m][(d, b)] = trainer.run(problem, m, b)
                    records.append(record)
    summary = {
        "command": command,
        "config": sizes,
        "datasets": ds,
        "methods": ms,
        "betas": bs,
        "seconds": time.perf_counter() - t_start,
        "train_seconds": sum(trainer.seconds.values()),
        "networks_trained": len(trainer.cache),
        "records": records,
        "goals": guidance_goals(records),
        "sampling_ms_per_1000": sampling_times(records),
    }
    run.write_json("summary.json", summary)
    run.write_text("summary.md", summary_markdown(summary))
    for m in ms:
        labels = {(r["data"], r["beta"]): f"{r['sw2']:.2f}" for r in records if r["method"] == m}
        title = f"{m}: samples (red: SW2 to the exact target)"
        plot_grid(run / f"grid_{m}.png", clouds[m], ds, bs, title, labels)
    plot_grid(run / "grid_target.png", targets, ds, bs, "exact target pi ∝ p exp(-beta E)")
    return summary


def _get(records, data, method, beta) -> dict[str, Any] | None:
    for r in records:
        if r["data"] == data and r["method"] == method and r["beta"] == beta:
            return r
    return None


def guidance_goals(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quality goals of EFM, ED and efm-beta at each beta > 0.

    ``ratio_fm``: distance to the exact target over the unguided model's distance to the data
    (goal <= 1.5); ``ratio_qgpo``: over QGPO's distance to the same target (goal <= 1).
    """
    goals = []
    for r in records:
        if r["method"] not in ("efm", "ed", "efm-beta") or r["beta"] == 0:
            continue
        fm = _get(records, r["data"], "fm", 0.0)
        qgpo = _get(records, r["data"], "qgpo", r["beta"])
        g: dict[str, Any] = {"data": r["data"], "method": r["method"], "beta": r["beta"]}
        if fm is not None:
            g["ratio_fm"] = r["sw2"] / fm["sw2"]
            g["ok_fm"] = bool(g["ratio_fm"] <= 1.5)
        if qgpo is not None:
            g["ratio_qgpo"] = r["sw2"] / qgpo["sw2"]
            g["ok_qgpo"] = bool(g["ratio_qgpo"] <= 1.0)
        goals.append(g)
    return goals


def sampling_times(records: list[dict[str, Any]]) -> dict[str, float]:
    """Median milliseconds per 1,000 samples of each method over all its runs."""
    out: dict[str, float] = {}
    for m in dict.fromkeys(r["method"] for r in records):
        out[m] = float(np.median([r["ms_per_1000"] for r in records if r["method"] == m]))
    return out


def _table(summary: dict[str, Any], field: str, fmt: str, with_floor: bool = False) -> str:
    betas = summary["betas"]
    head = "| data | method | " + " | ".join(f"β={b:g}" for b in betas) + " |"
    lines = [head, "|" + "---|" * (len(betas) + 2)]
    records = summary["records"]
    for d in summary["datasets"]:
        if with_floor:
            row = [_get(records, d, summary["methods"][0], b) for b in betas]
            cells = [format(r["floor"], fmt) if r else "" for r in row]
            lines.append(f"| {d} | *floor* | " + " | ".join(cells) + " |")
        if field == "mean_energy":
            row = [_get(records, d, summary["methods"][0], b) for b in betas]
            cells = [format(r["exact_mean_energy"], fmt) if r else "" for r in row]
            lines.append(f"| {d} | *exact* | " + " | ".join(cells) + " |")
        for m in summary["methods"]:
            row = [_get(records, d, m, b) for b in betas]
            cells = [format(r[field], fmt) if r else "" for r in row]
            lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The sweep's results as Markdown tables (distance, mean energy, NLL, time, goals)."""
    cfg = summary["config"]
    parts = [
        "# Toy sweep",
        "",
        f"Command: `{summary['command']}`" if summary["command"] else "",
        f"Wall time {summary['seconds']:.0f} s ({summary['train_seconds']:.0f} s training "
        f"{summary['networks_trained']} networks of {cfg['steps']} steps, batch "
        f"{cfg['batch_size']}); {cfg['n_data']} data points; {cfg['n_eval']} samples per set.",
        "",
        "## Sliced Wasserstein-2 distance to the exact target (lower is better)",
        "",
        "*floor*: the distance between two independent exact sample sets of the same size.",
        "",
        _table(summary, "sw2", ".3f", with_floor=True),
        "",
        "## Mean energy of the samples (*exact*: under the target)",
        "",
        _table(summary, "mean_energy", ".3f"),
        "",
        "## NLL of exact target samples under each model (nats, lower is better)",
        "",
        _table(summary, "nll", ".2f"),
        "",
        "## Sampling time (ms per 1,000 samples, median over runs)",
        "",
        "| method | ms / 1000 | ratio to efm |",
        "|---|---|---|",
    ]
    times = summary["sampling_ms_per_1000"]
    ref = times.get("efm")
    for m, t in times.items():
        ratio = f"{t / ref:.2f}" if ref else ""
        parts.append(f"| {m} | {t:.1f} | {ratio} |")
    parts += [
        "",
        "## Goals (β > 0): SW2 / SW2(fm, β=0 vs data) ≤ 1.5 and SW2 / SW2(qgpo) ≤ 1",
        "",
        "| data | method | β | ratio to fm | ok | ratio to qgpo | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in summary["goals"]:
        parts.append(
            f"| {g['data']} | {g['method']} | {g['beta']:g} | {g.get('ratio_fm', float('nan')):.2f}"
            f" | {'yes' if g.get('ok_fm') else 'no'} | {g.get('ratio_qgpo', float('nan')):.2f}"
            f" | {'yes' if g.get('ok_qgpo') else 'no'} |"
        )
    return "\n".join(parts) + "\n"
