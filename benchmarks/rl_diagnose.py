"""Diagnose a finished `ewfm train` run: its critic and its last QIPO support sets.

Critic (any run past the critic stage): Q of one seed on 20,000 dataset pairs (at most) against the
dataset's discounted Monte-Carlo returns (`ewfm.rl.discounted_returns`: scale and
correlation), and how Q moves when the dataset action is perturbed or replaced by a uniform
random action (a critic that prefers arbitrary actions will be exploited by QIPO).

Supports (QIPO runs): per seed, the share of the policy's support actions on the edge of
the action box (|a| > 0.99 in some coordinate), against the dataset actions, and the mean
Q of edge and inner supports (a Q gap of g is a weight ratio of exp(beta g)).

    python benchmarks/rl_diagnose.py RUN [--seed J]
"""

import argparse

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ewfm.rl import (
    Run,
    discounted_returns,
    ensure_dataset,
    load_run,
    load_transitions,
    seed_slice,
)


def load_with_data(path: str):
    """A run (`ewfm.rl.load_run`) and the transitions of its dataset."""
    run = load_run(path)
    return run, load_transitions(ensure_dataset(run.dataset_id, progress=False))


def critic_report(run: Run, tr, seed: int) -> None:
    cfg, mean, std = run.config, run.mean, run.std
    state, _, meta = run.load("critic")
    q = seed_slice(state.model.q, seed)
    mc = discounted_returns(tr.rewards, tr.terminals, tr.timeouts, cfg.gamma)
    sel = np.random.default_rng(0).choice(tr.size, min(20_000, tr.size), replace=False)
    s = jnp.asarray((np.asarray(tr.observations)[sel] - mean) / std)
    a = jnp.asarray(np.asarray(tr.actions)[sel], jnp.float32)
    qmin = jax.jit(jax.vmap(q.min))
    qv = np.asarray(qmin(s, a))
    m = mc[sel]
    print(
        f"critic (seed {seed}, epoch {meta['epoch']}): Q mean {qv.mean():.1f}, "
        f"Monte-Carlo mean {m.mean():.1f}, correlation {np.corrcoef(qv, m)[0, 1]:.3f}"
    )
    for scale in (0.1, 0.3):
        an = jnp.clip(a + scale * jr.normal(jr.key(1), a.shape), -1, 1)
        qn = np.asarray(qmin(s, an))
        print(
            f"  action + N(0, {scale}^2): mean Q change {np.mean(qn - qv):+.2f}, "
            f"share higher {np.mean(qn > qv):.2f}"
        )
    qr = np.asarray(qmin(s, jr.uniform(jr.key(2), a.shape, minval=-1, maxval=1)))
    print(
        f"  uniform random action: mean Q change {np.mean(qr - qv):+.2f}, "
        f"share higher {np.mean(qr > qv):.2f}"
    )


def support_report(run: Run) -> None:
    cfg = run.config
    _, sset, meta = run.load("qipo")
    k, m = cfg.seeds, cfg.support
    acts, q = np.asarray(sset.actions), np.asarray(sset.q)
    first = 1 if cfg.keep_data_action else 0
    print(f"supports of QIPO epoch {meta['epoch']} (M = {m}, beta = {cfg.beta}):")
    for j in range(k):
        pol, qp = acts[j][:, first:], q[j][:, first:]
        edge = (np.abs(pol) > 0.99).any(-1)
        line = (
            f"  seed {j}: edge supports {edge.mean():.3f}, "
            f"Q edge {qp[edge].mean():.1f} vs inner {qp[~edge].mean():.1f}"
        )
        if first:
            data_edge = (np.abs(acts[j][:, 0]) > 0.99).any(-1).mean()
            line += f"; dataset actions on the edge {data_edge:.3f}, Q {q[j][:, 0].mean():.1f}"
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--seed", type=int, default=0, help="which seed's critic (0-based)")
    args = p.parse_args()
    run, tr = load_with_data(args.run)
    if run.stage_path("critic").exists():
        critic_report(run, tr, args.seed)
    if run.stage_path("qipo").exists():
        support_report(run)


if __name__ == "__main__":
    main()
