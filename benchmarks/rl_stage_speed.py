"""Each `ewfm train` stage's steps/s against its FLOP limit on this machine.

On a CPU every critic or policy step per second is score (more steps in the same wall time),
so the question is how far each stage's step is from what the matmul units allow. For the
quick preset's networks (or ``--preset paper``) and a dataset's dimensions:

- FLOPs per step: XLA's count for the gradient of the stage's own loss (`Stage.recipe`) on
  one batch (the optimiser's elementwise update is not counted);
- steps/s: the stage's jitted, vmapped epoch program (as `ewfm train` runs it, one seed),
  timed over ``--steps`` steps after compilation, median of ``--repeats``;
- the limit: chained float32 matmuls of the stage's largest layer shape (rows x width x
  width) in one jitted loop, measured in the same process, and the peak at 1024^3.

Achieved GFLOP/s over the matmul rate at the stage's shape says how much a faster program
could gain; run pinned (``taskset -c 0``) on an idle machine.

    python benchmarks/rl_stage_speed.py [--preset quick] [--obs 11] [--act 3] [--steps 200]
"""

import argparse
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from _record import write_result
from core import timeit

from ewfm.rl import STAGES, CriticBatch, Dims, SupportSet, resolve_config


def matmul_gflops(rows: int, width: int, repeats: int) -> float:
    """GFLOP/s of chained (rows x width) @ (width x width) products inside one jitted loop
    (no dispatch per product; each depends on the last, so none is hoisted)."""
    a, w = jr.normal(jr.key(0), (rows, width)), jr.normal(jr.key(1), (width, width)) / width
    n = max(1, int(4e8 // (2 * rows * width * width)))  # ~0.4 GFLOP per timing
    f = jax.jit(lambda x, y: jax.lax.fori_loop(0, n, lambda i, c: c @ y, x))
    return 2 * rows * width * width * n / timeit(lambda: f(a, w), repeats) / 1e9


def _flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = (cost[0] if isinstance(cost, list) else cost) or {}
    return float(cost.get("flops", float("nan")))


def _data(stage: str, cfg, dims: Dims, n: int, key) -> Any:
    """Synthetic data of the stage's shapes (one seed axis where the stage has one)."""
    k = jr.split(key, 6)
    s, a = jr.normal(k[0], (n, dims.obs)), jnp.tanh(jr.normal(k[1], (n, dims.act)))
    if stage == "behaviour":
        return (s, a), (s[: cfg.batch_size], a[: cfg.batch_size])
    if stage == "critic":
        sup = jnp.tanh(jr.normal(k[2], (1, n, cfg.critic_support, dims.act)))
        full = CriticBatch(s, a, jr.normal(k[3], (n,)), s, jnp.zeros(n), sup)
        b = cfg.critic_batch
        return full, CriticBatch(
            s[:b], a[:b], full.rewards[:b], s[:b], full.terminals[:b], sup[0, :b]
        )
    sup = jnp.tanh(jr.normal(k[2], (1, n, cfg.support, dims.act)))
    q = jr.normal(k[3], (1, n, cfg.support))
    b = cfg.qipo_states
    return SupportSet(s, sup, q), SupportSet(s[:b], sup[0, :b], q[0, :b])


def _rows(stage: str, cfg) -> int:
    """Rows of the stage's largest matmuls per step (batch x evaluations per row)."""
    if stage == "behaviour":
        return cfg.batch_size
    if stage == "critic":
        return cfg.critic_batch * cfg.critic_support  # the target's next-state supports
    return cfg.qipo_states * cfg.support


def measure(stage: str, cfg, dims: Dims, steps: int, repeats: int) -> dict[str, Any]:
    cls = STAGES[stage]
    phase = "td" if stage == "critic" else None
    keys = jr.split(jr.key(0), 1)
    state = cls.fresh(cfg, dims, keys)
    full, batch = _data(stage, cfg, dims, max(4096, dims.subset), jr.key(1))
    recipe = cls.recipe(cfg, phase or cls.phases[0])
    model = jax.tree_util.tree_map(lambda x: x[0], eqx.filter(state.model, eqx.is_array))
    model = eqx.combine(model, eqx.filter(state.model, eqx.is_array, inverse=True))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    grad = lambda p, b: jax.grad(lambda q: recipe.loss(eqx.combine(q, static), b, jr.key(2)))(p)
    flops = _flops(grad, params, batch)
    epoch = cls.program(cfg, phase)[1]
    ks = jr.split(jr.key(3), 1)
    seconds = timeit(lambda: epoch(state, full, ks), repeats) / steps
    width = cfg.critic_width if stage == "critic" else cfg.width
    rows = _rows(stage, cfg)
    at_shape = matmul_gflops(rows, width, repeats)
    achieved = flops / seconds / 1e9
    return {
        "stage": stage,
        "steps_per_s": 1.0 / seconds,
        "gflop_per_step": flops / 1e9,
        "achieved_gflops": achieved,
        "matmul_shape": [rows, width, width],
        "matmul_gflops_at_shape": at_shape,
        "limit_steps_per_s": at_shape * 1e9 / flops,
        "efficiency": achieved / at_shape,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--obs", type=int, default=11, help="state dimension (hopper: 11)")
    ap.add_argument("--act", type=int, default=3, help="action dimension (hopper: 3)")
    ap.add_argument("--steps", type=int, default=200, help="steps per timed epoch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = resolve_config(args.preset, overrides={"steps_per_epoch": args.steps})
    dims = Dims(args.obs, args.act, 4096, 4096)
    rows = [
        measure(s, cfg, dims, args.steps, args.repeats) for s in ("behaviour", "critic", "qipo")
    ]
    peak = matmul_gflops(1024, 1024, args.repeats)
    name = f"rl_stage_speed_{args.preset}"
    record = {"preset": args.preset, "obs": args.obs, "act": args.act, "steps": args.steps}
    write_result(name, record | {"peak_matmul_gflops": peak, "stages": rows})
    print(f"matmul peak (1024^3): {peak:.0f} GFLOP/s")
    for r in rows:
        print(
            f"{r['stage']:>9}: {r['steps_per_s']:7.1f} steps/s, {r['gflop_per_step'] * 1e3:7.2f} "
            f"MFLOP/step, {r['achieved_gflops']:5.1f} GFLOP/s = {r['efficiency']:.0%} of a "
            f"{'x'.join(map(str, r['matmul_shape']))} matmul ({r['matmul_gflops_at_shape']:.0f} "
            f"GFLOP/s; limit {r['limit_steps_per_s']:.0f} steps/s)"
        )


if __name__ == "__main__":
    main()
