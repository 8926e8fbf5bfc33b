"""`ewfm diagnose critic`: does a run's critic rank a state's actions as their true values do?

QIPO only compares Q across one state's M supports (the weights ``M softmax_j(beta Q_j)`` of
eqs. (5.2) and (5.3) in docs/method.md), so what decides whether it improves on its
behaviour policy is the critic's ranking *within* a state, not its fit across states. This
module measures that ranking against the truth:

- the true value of a support is its expected discounted return under the dataset's own
  behaviour policy, averaged over K stochastic rollouts with common random numbers across a
  state's supports (``_truth.py``);
- the truth is noisy for finite K: its split-half reliability (the within-state rank
  correlation of two halves of the rollouts, Spearman-Brown corrected to K) bounds what
  any critic can score; a critic equal to the true expected Q reaches about its square
  root, the *ceiling* reported beside every correlation.

The statistics are small pure functions of arrays (`within_spearman`,
`split_half_reliability`, `weight_gain`, `truth_gain`, `norm_slope`, `score_probe`);
`diagnose_critic` draws the supports, runs the rollouts and writes the report.
"""

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Float

from .. import __version__
from .._experiment import ConfigError, Progress, atomic_path, write_json_atomic
from ._qipo import draw_supports_jit, scale_q, score_supports
from ._truth import Rollouts, dataset_continuations, radius_supports, step_in_episode, true_returns

PROBES: dict[str, str] = {
    "behaviour": "the behaviour model's own supports, as at QIPO's first renewal",
    "radius": "the dataset action and uniform offsets of at most +-radius per dimension",
}
"""The two scales at which `diagnose_critic` probes the critic."""

RESULT_NAME = "diagnose_critic.json"

# -- statistics (pure; no simulator) ------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def within_spearman(
    x: Float[np.ndarray, "n m"], y: Float[np.ndarray, "n m"]
) -> Float[np.ndarray, " n"]:
    """Spearman rank correlation of ``x`` and ``y`` within each state (row); NaN for a state
    where either is constant (no ranking to compare)."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    rx -= rx.mean(-1, keepdims=True)
    ry -= ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / den, np.nan)


def spearman_brown(r: float, factor: float = 2.0) -> float:
    """The reliability of a measurement ``factor`` times as long as one whose two halves
    correlate at ``r``: ``factor r / (1 + (factor - 1) r)``."""
    return factor * r / (1.0 + (factor - 1.0) * r)


def split_half_reliability(returns: Float[np.ndarray, "n m k"]) -> float:
    """Within-state reliability of the truth averaged over K rollouts.

    The rollouts are split into two halves (even and odd); the mean over states of the
    within-state Spearman correlation of the two halves' means is corrected by
    Spearman-Brown to K rollouts. For true values of within-state variance ``v`` observed
    with independent noise of variance ``e`` per rollout, it estimates ``v / (v + e / K)``
    (exactly so for Pearson correlations; ranks of a few Gaussian values correlate a little
    less, by Moran's expectation 0.76 for 0.8 at M = 16, and so does a critic's).
    """
    returns = np.asarray(returns, float)
    if returns.shape[-1] < 2:
        raise ConfigError("a noise ceiling needs at least 2 rollouts per support; use K >= 2.")
    a, b = returns[..., ::2].mean(-1), returns[..., 1::2].mean(-1)
    return spearman_brown(_mean_se(within_spearman(a, b))[0])


def weight_gain(
    q_w: Float[np.ndarray, "n m"], truth: Float[np.ndarray, "n m"], beta: float
) -> Float[np.ndarray, " n"]:
    """Per state, the true value under the weights ``softmax_j(beta q_w)`` minus its mean
    over the supports (what QIPO's re-weighting gains over plain imitation)."""
    z = beta * np.asarray(q_w, float)
    w = np.exp(z - z.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    truth = np.asarray(truth, float)
    return (w * truth).sum(-1) - truth.mean(-1)


def _scaled(q: np.ndarray, q_norm: str) -> np.ndarray:
    return np.asarray(scale_q(jnp.asarray(q, jnp.float32), q_norm), float)


def truth_gain(
    returns: Float[np.ndarray, "n m k"], beta: float, q_norm: str
) -> Float[np.ndarray, " n"]:
    """The gain of weights computed from the truth itself, the best a critic can do: the
    weights of one half of the rollouts scored on the other half (and the reverse,
    averaged), so that the rollouts' noise does not select itself."""
    returns = np.asarray(returns, float)
    a, b = returns[..., ::2].mean(-1), returns[..., 1::2].mean(-1)
    return 0.5 * (
        weight_gain(_scaled(a, q_norm), b, beta) + weight_gain(_scaled(b, q_norm), a, beta)
    )


def norm_slope(q: Float[np.ndarray, "n m"], actions: Float[np.ndarray, "n m act"]) -> float:
    """The within-state slope of ``q`` on ``||a||^2``: least squares of the state-centred
    ``q`` on the state-centred ``||a||^2`` (negative: large actions are worse)."""
    x = (np.asarray(actions, float) ** 2).sum(-1)
    x -= x.mean(-1, keepdims=True)
    y = np.asarray(q, float) - np.asarray(q, float).mean(-1, keepdims=True)
    return float((x * y).sum() / max((x**2).sum(), np.finfo(float).tiny))


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over states of the finite values (NaN: no ranking there)."""
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def score_probe(
    q: Float[np.ndarray, "n m"],
    returns: Float[np.ndarray, "n m k"],
    actions: Float[np.ndarray, "n m act"],
    *,
    beta: float,
    q_norm: str,
) -> dict[str, Any]:
    """Every number of one probe: the critic ``q`` against the rollouts' ``returns``.

    ``rank_corr`` (± ``rank_corr_se`` over states) is the mean within-state Spearman
    correlation of the critic with the truth (the mean of the K returns); ``ceiling`` is the
    square root of the truth's reliability, about what a critic equal to the true expected Q
    scores; ``rank_fraction`` is their ratio. ``gain_fraction`` is the true value gained by
    QIPO's weights ``softmax(beta scale_q(Q))`` as a share of the truth's own cross-fitted
    gain. ``slope_critic`` / ``slope_truth``: the within-state slopes on ``||a||^2``.
    """
    q, returns = np.asarray(q, float), np.asarray(returns, float)
    truth = returns.mean(-1)
    rel = split_half_reliability(returns)
    ceiling = math.sqrt(rel) if rel > 0 else math.nan
    rho, rho_se = _mean_se(within_spearman(q, truth))
    g_c, g_c_se = _mean_se(weight_gain(_scaled(q, q_norm), truth, beta))
    g_t, g_t_se = _mean_se(truth_gain(returns, beta, q_norm))
    s_c, s_t = norm_slope(q, actions), norm_slope(truth, actions)
    return {
        "states": int(q.shape[0]),
        "supports": int(q.shape[1]),
        "rollouts": int(returns.shape[-1]),
        "rank_corr": rho,
        "rank_corr_se": rho_se,
        "reliability": rel,
        "ceiling": ceiling,
        "rank_fraction": rho / ceiling if ceiling > 0 else math.nan,
        "gain_critic": g_c,
        "gain_critic_se": g_c_se,
        "gain_truth": g_t,
        "gain_truth_se": g_t_se,
        "gain_fraction": g_c / g_t if g_t > 0 else math.nan,
        "slope_critic": s_c,
        "slope_truth": s_t,
        "slope_sign_agrees": bool(np.sign(s_c) == np.sign(s_t)),
        "spread_critic": float(q.std(-1).mean()),
        "spread_truth": float(truth.std(-1).mean()),
    }


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """What a diagnosis needs from the run and its dataset, checked before any rollout."""

    run: Any
    field: Any
    qnet: Any
    recipe: dict[str, Any]
    tr: Any
    env_id: str


def _check(n: int, m: int, k: int, horizon: int, radius: float) -> None:
    if n < 2:
        raise ConfigError(f"states must be >= 2 (a standard error needs two), got {n}.")
    if m < 3:
        raise ConfigError(f"supports must be >= 3 to rank a state's actions, got {m}.")
    if k < 2:
        raise ConfigError(
            f"rollouts must be >= 2: the noise ceiling compares two halves of them, got {k}."
        )
    if horizon < 1:
        raise ConfigError(f"horizon must be >= 1 environment step, got {horizon}.")
    if not 0 < radius <= 2:
        raise ConfigError(f"radius must be in (0, 2] (the action box is [-1, 1]), got {radius}.")


def _check_size(run: Any, id_: str, size: int | None) -> None:
    if run.transitions is not None and size is not None and run.transitions != size:
        raise ConfigError(
            f"{id_} now holds {size} transitions but {run.root} was trained on "
            f"{run.transitions}: the dataset was rebuilt since; the truth would be another's."
        )


def _load_inputs(run_dir: str | os.PathLike, seed: int) -> _Inputs:
    """The run's seed ``seed`` (behaviour model, critic) and its dataset, or a one-line
    error naming what is missing."""
    import json

    from ._data import env_id_for, load_transitions
    from ._data._store import local_metadata
    from ._policy import seed_slice
    from ._run import load_run

    run = load_run(run_dir)
    cfg = run.config
    if cfg.method == "bc":
        raise ConfigError(f"{run.root} is a bc run: it has no critic to diagnose.")
    if not 0 <= seed < cfg.seeds:
        raise ConfigError(
            f"seed {seed} is out of range: {run.root} holds seeds 0..{cfg.seeds - 1}."
        )
    id_ = run.dataset_id  # the data it was trained on (an older recipe version too)
    meta = local_metadata(id_)
    if meta is None:
        raise ConfigError(
            f"dataset {id_} (the run's {cfg.dataset}) is not on this machine; build it with "
            f"`ewfm data build {id_}` (or set MINARI_DATASETS_PATH to where the run's data are)."
        )
    _check_size(run, id_, meta.get("total_steps"))
    qnet = seed_slice(run.q_net(), seed)
    field = seed_slice(run.behaviour(), seed)
    recipe = meta.get("ewfm", {})
    recipe = json.loads(recipe) if isinstance(recipe, str) else recipe
    tr = load_transitions(id_)
    _check_size(run, id_, tr.size)
    return _Inputs(run, field, qnet, recipe, tr, env_id_for(id_))


def diagnose_critic(
    run_dir: str | os.PathLike,
    *,
    seed: int = 0,
    states: int = 32,
    supports: int | None = None,
    rollouts: int = 8,
    horizon: int = 200,
    radius: float = 0.3,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    capacity: int = 1024,
) -> dict[str, Any]:
    """Score seed ``seed``'s critic of the run ``run_dir`` against the truth; write the
    report to ``out`` (default ``RUN/diagnose_critic.json``, a ``.png`` and an ``.npz`` of
    the per-support arrays beside it) and return it.

    ``states`` random dataset states, each with ``supports`` actions (default: the run's
    ``support``) at both `PROBES`; ``rollouts`` continuations of ``horizon`` steps per
    support, discounted with the run's ``gamma``; ``capacity`` simulator copies step in
    lock step. See `score_probe` for the numbers of each probe.
    """
    t_start = time.perf_counter()
    _check(states, supports or 3, rollouts, horizon, radius)
    out = Path(out) if out is not None else Path(run_dir) / RESULT_NAME
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the report's file name (.json).")
    inp = _load_inputs(run_dir, seed)
    run, cfg, tr = inp.run, inp.run.config, inp.tr
    m = supports or cfg.support
    _check(states, m, rollouts, horizon, radius)
    if states > tr.size:
        raise ConfigError(f"states must be at most the dataset's {tr.size} transitions.")
    conts, part_of = dataset_continuations(inp.recipe, tr.size)
    rng = np.random.default_rng(0)  # the same states and offsets for every seed of a run
    rows = np.sort(rng.choice(tr.size, states, replace=False))
    obs0 = np.asarray(tr.observations)[rows]
    sup = _supports(inp, obs0, np.asarray(tr.actions, np.float32)[rows], m, radius, rng)
    s = jnp.asarray((obs0 - run.mean) / run.std, jnp.float32)
    q = {k: np.asarray(score_supports(inp.qnet, s, jnp.asarray(a))) for k, a in sup.items()}
    pool = Rollouts(inp.env_id, conts, min(max(capacity, m * rollouts), states * m * rollouts))
    per = max(1, len(pool.envs) // (m * rollouts))
    t0 = step_in_episode(tr.episode_ends, tr.size)[rows]
    returns, worst = {}, 0.0
    with Progress(progress, log_lines=True) as bars:
        for name, a in sup.items():
            task = bars.task(f"{name} probe", -(-states // per) * horizon)
            returns[name], err = true_returns(
                pool, (rows, obs0, t0, part_of[rows]), a.astype(np.float64),
                rollouts=rollouts, horizon=horizon, gamma=cfg.gamma, task=task,
            )  # fmt: skip
            worst = max(worst, err)
    result = {
        **_run_fields(inp, seed),
        "behaviour_policy": sorted({conts[p].policy for p in np.unique(part_of[rows])}),
        "states": states,
        "supports": m,
        "rollouts": rollouts,
        "horizon": horizon,
        "radius": radius,
        "state_rebuild_max_error": worst,
        "probes": {
            k: score_probe(q[k], returns[k], sup[k], beta=cfg.beta, q_norm=cfg.q_norm)
            for k in PROBES
        },
        "seconds": time.perf_counter() - t_start,
        "ewfm_version": __version__,
    }
    arrays = {"rows": rows, "states": obs0}
    for k in PROBES:
        arrays |= {f"{k}_q": q[k], f"{k}_returns": returns[k], f"{k}_actions": sup[k]}
    _write(out, result, arrays)
    return result


def _run_fields(inp: _Inputs, seed: int) -> dict[str, Any]:
    """What the report records about the run: which one, its data and its weights' settings."""
    run, cfg = inp.run, inp.run.config
    return {
        "run": str(run.root),
        "dataset": cfg.dataset,
        "dataset_id": run.dataset_id,  # the data it was trained on (its recipe version)
        "env": inp.env_id,
        "seed": seed,
        "method": cfg.method,
        "critic": cfg.critic,
        "gamma": cfg.gamma,
        "beta": cfg.beta,
        "q_norm": cfg.q_norm,
        "keep_data_action": cfg.keep_data_action,
    }


def _supports(
    inp: _Inputs, obs0: np.ndarray, data: np.ndarray, m: int, radius: float, rng: Any
) -> dict[str, np.ndarray]:
    """Each probe's ``[n, M, act]`` supports: the behaviour model's (with the dataset
    action first when the run keeps it, as QIPO's first renewal does) and the radius's."""
    run = inp.run
    s = jnp.asarray((obs0 - run.mean) / run.std, jnp.float32)
    keep = run.config.keep_data_action
    behaviour = draw_supports_jit(
        inp.field, run.sampler, s, jr.key(0), m=m, action_dim=run.act_dim,
        data_actions=jnp.asarray(data) if keep else None,
    )  # fmt: skip
    return {
        "behaviour": np.asarray(behaviour),
        "radius": radius_supports(data, m, radius, rng).astype(np.float32),
    }


def _write(out: Path, result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The report, its arrays and its plot, each written whole then renamed into place."""
    with atomic_path(out.with_suffix(".npz")) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)
    try:
        plot_diagnosis(result, arrays, out.with_suffix(".png"))
        result["plot"] = str(out.with_suffix(".png"))
    except ImportError:  # matplotlib is optional
        result["plot"] = None
    write_json_atomic(out, result)


def plot_diagnosis(
    result: dict[str, Any], arrays: dict[str, np.ndarray], path: str | os.PathLike
) -> None:
    """Per probe, the critic's Q against the truth within each state (both centred on the
    state's mean); and the bars of the two fractions (rank correlation of the ceiling, gain
    of the truth's gain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PROBES) + 1, figsize=(5 * (len(PROBES) + 1), 4))
    for ax, name in zip(axes, PROBES, strict=False):
        q, truth = arrays[f"{name}_q"], arrays[f"{name}_returns"].mean(-1)
        p = result["probes"][name]
        ax.scatter(
            (truth - truth.mean(-1, keepdims=True)).ravel(),
            (q - q.mean(-1, keepdims=True)).ravel(),
            s=6, alpha=0.5,
        )  # fmt: skip
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_xlabel("true Q - state mean")
        ax.set_ylabel("critic Q - state mean")
        ax.set_title(
            f"{name}: rank corr {p['rank_corr']:.2f} (ceiling {p['ceiling']:.2f})", fontsize=10
        )
    ax = axes[-1]
    x = np.arange(len(PROBES))
    for off, key, label in ((-0.2, "rank_fraction", "rank corr / ceiling"),
                            (0.2, "gain_fraction", "gain / truth's gain")):  # fmt: skip
        vals = [result["probes"][k][key] for k in PROBES]
        ax.bar(x + off, np.nan_to_num(vals), 0.4, label=label)
    ax.axhline(1, color="k", lw=0.5)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(x, list(PROBES))
    ax.set_title(f"{result['dataset']}, seed {result['seed']}: share of the truth's", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
