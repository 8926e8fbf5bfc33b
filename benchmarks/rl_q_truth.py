"""Ground truth for a run's critic *within* each state: does Q rank a state's support actions
the way their true returns do? QIPO only ever compares Q across one state's M supports, so
this, not the correlation of Q with returns across states, is what decides whether the
Q-weighted loss improves the policy.

For ``--states`` random dataset states, M supports are drawn as at QIPO's first renewal (the
dataset action + M - 1 samples of the run's behaviour EMA). Each support is executed from
the exact simulator state (MuJoCo's qpos/qvel rebuilt from the observation; the unobserved
x position does not affect the dynamics, and the rebuild is checked), then the dataset's own
behaviour policy mu (its recipe's pack policy) runs for ``--horizon`` steps. With
``--continuation stochastic`` mu samples its Gaussian as the dataset did, ``--rollouts`` times
with the same noise for all supports of a state (common random numbers): the discounted
return estimates Q^mu(s, a_j), noisily. With ``--continuation mean`` (default) mu takes its
mean action: MuJoCo is deterministic, so one rollout gives Q^{mu_mean}(s, a_j) *exactly* — a
noise-free stand-in for Q^mu. Either is exact up to a tail beyond the horizon that is nearly
the same for every support of a state.

Reported: the mean within-state rank correlation of the critic with the truth, beside the
truth's own split-half correlation (its noise ceiling, stochastic only); the true Q gain of
QIPO's weights ``sum_j w_j Q_true_j / M - mean_j Q_true_j`` for several beta (and with weights
from the truth itself, the best a critic could do: selected on one half of the rollouts and
scored on the other when they are noisy); within each state, the gap between edge-of-box
supports and inner ones by the critic and by the truth. Results go to
``benchmarks/results/rl_q_truth_<run>_seed<J>_<continuation>.json`` (+ ``.npz``: the per-support
Q, returns, actions and states).

    python benchmarks/rl_q_truth.py RUN [--seed J] [--states 64] [--horizon 300]
        [--continuation mean|stochastic] [--rollouts 4]

Kept as it is because docs/rl.md quotes its results files. The product version of this
measurement is ``ewfm diagnose critic RUN`` (`ewfm.rl.diagnose_critic`): the expected
return over stochastic rollouts only, a noise ceiling beside every number, a second probe
at a fixed radius around the dataset action, and the ||a||^2 slopes.
"""

import argparse
import json
import os
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _record import RESULTS, write_result

from ewfm.rl import (
    NumpyPackPolicy,
    dataset_plan,
    draw_supports,
    ensure_dataset,
    env_id_for,
    load_run,
    load_transitions,
    make_env,
    scale_q,
    seed_slice,
)


def step_in_episode(tr) -> np.ndarray:
    """Each transition's step index within its episode (for time-feature policies)."""
    idx = np.zeros(tr.size, np.int64)
    start = 0
    for end in tr.episode_ends:
        idx[start : end + 1] = np.arange(end + 1 - start)
        start = end + 1
    return idx


def rollout_returns(env_id, policy, obs0, t0, actions, *, rollouts, horizon, gamma, rng):
    """Discounted returns ``[n, M, R]`` of each support action followed by ``policy``."""
    n, m, ad = actions.shape
    envs, index = [], []
    for i in range(n):
        for j in range(m):
            for r in range(rollouts):
                envs.append(make_env(env_id).unwrapped)
                index.append((i, j, r))
    nq = envs[0].model.nq
    worst = 0.0
    for e, (i, _, _) in zip(envs, index, strict=True):
        e.reset(seed=0)
        o = obs0[i].astype(np.float64)
        e.set_state(np.concatenate([[0.0], o[: nq - 1]]), o[nq - 1 :])
        worst = max(worst, float(np.abs(e._get_obs() - o).max()))
    noise = rng.standard_normal((n, rollouts, horizon, ad))  # shared by a state's supports
    ii, jj, rr = (np.array(col) for col in zip(*index, strict=True))
    ret = np.zeros(len(envs))
    alive = np.ones(len(envs), bool)
    obs = np.zeros((len(envs), obs0.shape[1]))
    act = actions[ii, jj]
    for h in range(horizon):
        if h > 0:
            live = np.flatnonzero(alive)
            act = np.zeros((len(envs), ad))
            act[live] = policy(obs[live], (t0[ii] + h)[live], noise[ii[live], rr[live], h])
        for k in np.flatnonzero(alive):
            o, rew, term, _, _ = envs[k].step(act[k])
            ret[k] += gamma**h * rew
            obs[k] = o
            if term:
                alive[k] = False
        if not alive.any():
            break
    out = np.zeros((n, m, rollouts))
    out[ii, jj, rr] = ret
    return out, worst


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ra = np.argsort(np.argsort(a, axis=1), axis=1).astype(float)
    rb = np.argsort(np.argsort(b, axis=1), axis=1).astype(float)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    return (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))


def within_gap(v: np.ndarray, edge: np.ndarray, both: np.ndarray) -> float | None:
    """Mean over states of (mean over edge supports - mean over inner ones), within state."""
    if not both.any():
        return None
    e = (v * edge).sum(1) / np.maximum(edge.sum(1), 1)
    i = (v * ~edge).sum(1) / np.maximum((~edge).sum(1), 1)
    return float(np.mean((e - i)[both]))


def weighted_gain(q_w: np.ndarray, truth: np.ndarray, beta: float) -> float:
    """Mean over states of the true Q under weights M softmax(beta q_w), minus the uniform."""
    w = np.asarray(jax.nn.softmax(beta * jnp.asarray(q_w), axis=1))
    return float(np.mean((w * truth).sum(1) - truth.mean(1)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--seed", type=int, default=0, help="which seed's models (0-based)")
    p.add_argument("--states", type=int, default=64)
    p.add_argument("--continuation", choices=("mean", "stochastic"), default="mean")
    p.add_argument("--rollouts", type=int, default=4, help="stochastic continuation only")
    p.add_argument("--horizon", type=int, default=300)
    args = p.parse_args()
    t_start = time.perf_counter()
    run = load_run(args.run)
    cfg, mean, std = run.config, run.mean, run.std
    ds_id = ensure_dataset(run.dataset_id, progress=False)  # the data it was trained on
    tr = load_transitions(ds_id)
    field = seed_slice(run.behaviour(), args.seed)
    qnet = seed_slice(run.q_net(), args.seed)
    part = dataset_plan(ds_id)[0].parts[0]
    mu = NumpyPackPolicy(part.policy)
    stochastic = args.continuation == "stochastic" and part.stochastic
    policy = lambda o, t, eps: mu(o, t.astype(np.float64), eps if stochastic else None)
    rollouts = args.rollouts if stochastic else 1

    rng = np.random.default_rng(1)
    rows = rng.choice(tr.size, args.states, replace=False)
    obs0 = np.asarray(tr.observations)[rows]
    t0 = step_in_episode(tr)[rows]
    s = jnp.asarray((obs0 - mean) / std)
    data = jnp.asarray(np.asarray(tr.actions)[rows], jnp.float32)
    sup = eqx.filter_jit(draw_supports)(
        field, run.sampler, s, jr.key(2), m=cfg.support, action_dim=run.act_dim, data_actions=data
    )
    q = np.asarray(jax.vmap(jax.vmap(qnet.min, in_axes=(None, 0)))(s, sup))
    ret, worst = rollout_returns(
        env_id_for(ds_id),
        policy,
        obs0,
        t0,
        np.asarray(sup, np.float64),
        rollouts=rollouts,
        horizon=args.horizon,
        gamma=cfg.gamma,
        rng=rng,
    )
    truth = ret.mean(-1)
    half = rollouts // 2
    split = (ret[..., :half].mean(-1), ret[..., half:].mean(-1)) if half else (truth, truth)
    rho = spearman_rows(q, truth)
    ceiling = spearman_rows(*split)
    edge = (np.abs(np.asarray(sup)) > 0.99).any(-1)
    both = edge.any(1) & (~edge).any(1)  # states with edge and inner supports
    out = {
        "run": str(run.root),
        "dataset": cfg.dataset,
        "seed": args.seed,
        "states": args.states,
        "support": cfg.support,
        "continuation": "stochastic" if stochastic else "mean",
        "rollouts": rollouts,
        "horizon": args.horizon,
        "behaviour_policy": part.policy,
        "state_rebuild_max_error": worst,
        "critic_spread_within": float(q.std(1).mean()),
        "true_spread_within": float(truth.std(1).mean()),
        "rank_corr_critic_truth": float(np.nanmean(rho)),
        "rank_corr_truth_split_half": float(np.nanmean(ceiling)),
        "data_action_true_minus_mean": float(np.mean(truth[:, 0] - truth.mean(1))),
        "edge_share": float(edge.mean()),
        "states_with_edge_and_inner": int(both.sum()),
        "edge_minus_inner_critic": within_gap(q, edge, both),
        "edge_minus_inner_true": within_gap(truth, edge, both),
        "gain": {},
        "seconds": None,
    }
    for norm, betas in (("none", (0.1, 0.3, 1.0, 3.0)), ("spread", (0.3, 1.0, 3.0))):
        qw = np.asarray(scale_q(jnp.asarray(q), norm))
        ta, tb = (np.asarray(scale_q(jnp.asarray(x), norm)) for x in split)
        for b in betas:
            out["gain"][f"{norm} beta {b}"] = {
                "critic": weighted_gain(qw, truth, b),
                "truth": 0.5 * (weighted_gain(ta, split[1], b) + weighted_gain(tb, split[0], b)),
            }
    rows_ = np.arange(len(q))
    out["gain"]["argmax"] = {
        "critic": float(np.mean(truth[rows_, q.argmax(1)] - truth.mean(1))),
        "truth": float(
            np.mean(split[1][rows_, split[0].argmax(1)] - split[1].mean(1)) / 2
            + np.mean(split[0][rows_, split[1].argmax(1)] - split[0].mean(1)) / 2
        ),
    }
    out["seconds"] = time.perf_counter() - t_start
    name = f"{run.root.name}_seed{args.seed}_{out['continuation']}"
    dest = write_result(f"rl_q_truth_{name}", out)
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".npz")  # written whole, then renamed
    with os.fdopen(fd, "wb") as fh:
        np.savez_compressed(fh, q=q, returns=ret, supports=np.asarray(sup), states=obs0)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest.with_suffix(".npz"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
