"""`ewfm train --seeds K` speed-up: K seeds in one vmapped epoch vs K sequential epochs.

Builds the pipeline's own stage programs (`ewfm.rl.STAGES[name].program`, vmapped over a
leading seed axis) for the quick preset on hopper-shaped synthetic data (11-dim states,
3-dim actions; timing does not depend on the values), and times one epoch of each stage
(behaviour CFM, critic TD, QIPO) with K = 1 and with K seeds. The speed-up is
``K * t(K=1) / t(K)``: how much faster K seeds train side by side than one after another.
Medians over repeats after compilation; K=1 and K rows alternate so load drifts hit both.

    python benchmarks/rl_seeds.py [--seeds 3] [--steps 200] [--repeats 3]
"""

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
from _record import write_result

from ewfm.rl import STAGES, CriticBatch, Dims, SupportSet, resolve_config

OBS, ACT, N = 11, 3, 20_000


def stage_inputs(cfg, stage: str, k: int):
    """(stacked state, data) for one stage with ``k`` seeds."""
    st = STAGES[stage].fresh(cfg, Dims(OBS, ACT, N, N), jr.split(jr.key(0), k))
    s = jr.normal(jr.key(1), (N, OBS))
    a = jnp.tanh(jr.normal(jr.key(2), (N, ACT)))
    if stage == "behaviour":
        return st, (s, a)
    if stage == "critic":
        sup = jnp.tanh(jr.normal(jr.key(3), (k, N, cfg.critic_support, ACT)))
        return st, CriticBatch(s, a, jnp.ones(N), s, jnp.zeros(N), sup)
    acts = jnp.tanh(jr.normal(jr.key(4), (k, N, cfg.support, ACT)))
    return st, SupportSet(s, acts, jr.normal(jr.key(5), (k, N, cfg.support)))


def time_epoch(cfg, stage: str, k: int, repeats: int) -> float:
    _, epoch = STAGES[stage].program(cfg)  # the critic's: its TD phase
    st, data = stage_inputs(cfg, stage, k)
    keys = jr.split(jr.key(7), k)
    jax.block_until_ready(epoch(st, data, keys))  # compile
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(epoch(st, data, keys))
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="rl_seeds", help="results file name (benchmarks/results/)")
    args = ap.parse_args()
    cfg = resolve_config("quick", overrides={"steps_per_epoch": args.steps})
    rows = []
    for stage in ("behaviour", "critic", "qipo"):
        t1 = time_epoch(cfg, stage, 1, args.repeats)
        tk = time_epoch(cfg, stage, args.seeds, args.repeats)
        row = {
            "stage": stage,
            "seconds_1_seed": t1,
            "seconds_k_seeds": tk,
            "steps_per_s_1_seed": args.steps / t1,
            "seed_steps_per_s_k_seeds": args.seeds * args.steps / tk,
            "speedup_vs_sequential": args.seeds * t1 / tk,
        }
        rows.append(row)
        print(
            f"{stage:>9}: 1 seed {args.steps / t1:7.1f} steps/s | {args.seeds} seeds vmapped "
            f"{args.seeds * args.steps / tk:7.1f} seed-steps/s | speed-up "
            f"{row['speedup_vs_sequential']:.2f}x vs {args.seeds} sequential runs"
        )
    result = {"seeds": args.seeds, "steps_per_epoch": args.steps, "rows": rows}
    out = write_result(Path(args.out).stem, {**result, "jax": jax.__version__})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
