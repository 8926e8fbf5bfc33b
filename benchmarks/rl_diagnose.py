"""Diagnose a finished `ewfm train` run: its critic and its last QIPO support sets.

Critic (any run past the critic stage): Q of one seed on 20,000 dataset pairs against the
dataset's discounted Monte-Carlo returns (`ewfm.rl.discounted_returns`: scale and
correlation), and how Q moves when the dataset action is perturbed or replaced by a uniform
random action (a critic that prefers arbitrary actions will be exploited by QIPO).

Supports (QIPO runs): per seed, the share of the policy's support actions on the edge of
the action box (|a| > 0.99 in some coordinate), against the dataset actions, and the mean
Q of edge and inner supports (a Q gap of g is a weight ratio of exp(beta g)).

    python benchmarks/rl_diagnose.py RUN [--seed J]
"""

import argparse
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ewfm import load_checkpoint
from ewfm._train import init_state
from ewfm.rl import discounted_returns, load_transitions
from ewfm.rl._config import config_from_json
from ewfm.rl._pipeline import (
    RunDir,
    _fold,
    _program_key,
    _SeedKeys,
    _stage_fns,
    seed_slice,
    stacked_critic_states,
    stacked_fields,
)
from ewfm.rl._qipo import SupportSet


def load_run(path: str):
    """A run directory, its config, observation mean/std, dataset id and transitions."""
    from ewfm.rl import ensure_dataset

    run = RunDir(path)
    cfg = config_from_json(run.config_path)
    stats = json.loads((run.root / "obs_stats.json").read_text())
    mean, std = np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32)
    ds_id = ensure_dataset(cfg.dataset, progress=False)
    return run, cfg, mean, std, ds_id, load_transitions(ds_id)


def load_critic(run: RunDir, cfg, od: int, ad: int, seed: int):
    """One seed's twin Q network of a run (and the critic checkpoint's metadata)."""
    copt, _ = _stage_fns("critic", _program_key(cfg))
    like = stacked_critic_states(cfg, od, ad, jr.split(jr.key(0), cfg.seeds), copt)
    (cst, _), meta = load_checkpoint(run.stage_path("critic"), (like, None))
    return seed_slice(cst.model.q, seed), meta


def critic_report(run: RunDir, cfg, tr, mean, std, seed: int) -> None:
    q, meta = load_critic(run, cfg, mean.shape[0], tr.actions.shape[1], seed)
    mc = discounted_returns(tr.rewards, tr.terminals, tr.timeouts, cfg.gamma)
    sel = np.random.default_rng(0).choice(tr.size, 20_000, replace=False)
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


def support_report(run: RunDir, cfg, od: int, ad: int) -> None:
    opt, _ = _stage_fns("qipo", _program_key(cfg))
    fields = stacked_fields(cfg, od, ad, _fold(_SeedKeys(cfg.seed, cfg.seeds)["init"], 0))
    qst = eqx.filter_vmap(lambda f: init_state(f, opt))(fields)
    n, k, m = cfg.qipo_subset, cfg.seeds, cfg.support
    like = SupportSet(jnp.zeros((n, od)), jnp.zeros((k, n, m, ad)), jnp.zeros((k, n, m)))
    (_, sset), meta = load_checkpoint(run.stage_path("qipo"), (qst, like))
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
    run, cfg, mean, std, _, tr = load_run(args.run)
    if run.stage_path("critic").exists():
        critic_report(run, cfg, tr, mean, std, args.seed)
    if Path(run.stage_path("qipo")).exists():
        support_report(run, cfg, mean.shape[0], tr.actions.shape[1])


if __name__ == "__main__":
    main()
