"""One-state policy latency: what evaluation pays per environment step.

Times the QIPO-OT policy (QGPO-sized residual field, 17-dim state, 6-dim action, midpoint,
5 steps = 10 evaluations) on one state three ways, in one process so the rows compare:

- ``sampler``: the bare jitted sampler on partitioned arrays (the floor of this network);
- ``evaluator``: `ewfm.rl.evaluate`'s per-step call on an `ewfm.rl.Policy`;
- ``filter_jit``: ``eqx.filter_jit`` on the whole policy each call (what the evaluator once did).

Writes ``benchmarks/results/policy_latency.json``; reports median and minimum over repeats.

    python benchmarks/policy_latency.py [--repeats 500]
"""

import argparse
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _record import write_result

import ewfm
from ewfm.rl import Policy, policy_caller

STATE, ACTION = 17, 6


def times(fn, repeats):
    jax.block_until_ready(fn())  # compile and warm up
    jax.block_until_ready(fn())
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(out), "min_ms": 1e3 * min(out)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=500)
    p.add_argument("--out", default="policy_latency", help="results name (benchmarks/results/)")
    args = p.parse_args()

    field = eqx.filter_vmap(lambda k: ewfm.ResidualMLPField(ACTION, cond_dim=STATE, key=k))(
        jr.split(jr.PRNGKey(0), 1)
    )
    sampler = ewfm.Sampler(ewfm.OTPath(), "midpoint", 5, "velocity", clip=1.0)
    policy = Policy(field, None, sampler, jnp.zeros(STATE), jnp.ones(STATE), ACTION, 1.0)
    obs = jnp.asarray(jr.normal(jr.PRNGKey(1), (1, STATE)))
    key = jr.PRNGKey(2)

    params, static = eqx.partition(policy, eqx.is_array)
    bare = jax.jit(lambda p, o, k: eqx.combine(p, static)(o, k))
    call = policy_caller(policy)
    filtered = eqx.filter_jit(lambda pol, o, k: pol(o, k))

    rows = {
        "sampler": times(lambda: bare(params, obs, key), args.repeats),
        "evaluator": times(lambda: call(obs, key, None), args.repeats),
        "filter_jit": times(lambda: filtered(policy, obs, key), args.repeats),
    }
    for name, r in rows.items():
        print(f"{name:>10}: median {r['median_ms']:.3f} ms, min {r['min_ms']:.3f} ms")
    result = {
        "jax": jax.__version__,
        "repeats": args.repeats,
        "policy": "QIPO-OT, 1.64M-param residual field, midpoint 5 steps (10 evaluations)",
        "rows": rows,
    }
    out = write_result(Path(args.out).stem, result)
    print("wrote", out)


if __name__ == "__main__":
    main()
