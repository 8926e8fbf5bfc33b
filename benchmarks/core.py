"""Core speed benchmark: training steps/s and sampling time of a QGPO-sized field.

Writes ``benchmarks/results/core.json`` and prints a table. Sizes follow QGPO on D4RL
locomotion: a 17-dim state condition, 6-dim actions, the ~1.6M-parameter residual field.
Times are medians over repeats after compilation; compare rows of ONE run (the machine is
shared and noisy), e.g. guided / unguided sampling.

    python benchmarks/core.py [--repeats 5] [--out benchmarks/results/core.json]
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import ewfm

STATE, ACTION = 17, 6


def timeit(fn, repeats):
    jax.block_until_ready(fn())  # compile and warm up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def matmul_gflops(repeats):
    a = jr.normal(jr.PRNGKey(0), (1024, 1024))
    f = jax.jit(lambda x: x @ x)
    return 2 * 1024**3 / timeit(lambda: f(a), repeats) / 1e9


def field_flops(field, batch):
    """XLA's FLOP count for one field evaluation on a batch."""
    x, t, s = jnp.zeros((batch, ACTION)), jnp.zeros((batch,)), jnp.zeros((batch, STATE))
    params, static = eqx.partition(field, eqx.is_array)
    f = jax.jit(lambda p, x, t, s: ewfm.apply_field(eqx.combine(p, static), x, t, s))
    cost = f.lower(params, x, t, s).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def train_rate(field, batch, repeats):
    path = ewfm.VPPath()
    data = (jr.normal(jr.PRNGKey(1), (8192, ACTION)), jr.normal(jr.PRNGKey(2), (8192, STATE)))

    def loss(m, b, k):
        return ewfm.denoising_loss(m, path, b[0], k, cond=b[1])

    opt = optax.adam(3e-4)
    steps = 20
    epoch = ewfm.make_epoch(loss, opt, batch_size=batch, steps=steps)
    state = ewfm.init_state(field, opt)
    sec = timeit(lambda: epoch(state, data, jr.PRNGKey(3))[1], repeats)
    return steps / sec


def sampler(field, energy_net, kind, n):
    ot, vp = ewfm.OTPath(), ewfm.VPPath()
    states = jr.normal(jr.PRNGKey(4), (n, STATE))
    if kind == "heun-5x2":
        kw = dict(path=ot, solver="heun", steps=5, prediction="velocity")
    elif kind == "midpoint-5x2":  # QIPO-OT's policy sampler (RK2, 5 steps = 10 NFE)
        kw = dict(path=ot, solver="midpoint", steps=5, prediction="velocity")
    elif kind == "dpm2-15":
        kw = dict(path=vp, solver="dpm2", steps=15, prediction="eps")
    elif kind == "tsit5":
        kw = dict(path=ot, solver="tsit5", rtol=1e-3, atol=1e-3, prediction="velocity")
    else:  # CEP-guided DPM-Solver-15: an energy gradient at every evaluation
        field = ewfm.EnergyGuidedField(field, energy_net, vp, 1.0, "eps")
        kw = dict(path=vp, solver="dpm2", steps=15, prediction="eps")
    path = kw.pop("path")

    # partition once and jit on the arrays: per-call dispatch as in a tight evaluation loop
    params, static = eqx.partition(field, eqx.is_array)

    @jax.jit
    def run(p, key):
        return ewfm.sample(eqx.combine(p, static), path, key, (n, ACTION), states, **kw)

    return lambda: run(params, jr.PRNGKey(5)), run(params, jr.PRNGKey(5)).nfe


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/core.json")
    args = p.parse_args()

    field = ewfm.ResidualMLPField(ACTION, cond_dim=STATE, key=jr.PRNGKey(0))
    energy_net = ewfm.EnergyNet(ACTION, cond_dim=STATE, width=256, depth=3, key=jr.PRNGKey(1))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(field, eqx.is_array)))
    gflops = matmul_gflops(args.repeats)
    rows = []
    for batch in (256, 2048):
        rate = train_rate(field, batch, args.repeats)
        rows.append({"what": f"train step, batch {batch}", "steps_per_s": rate, "ms": 1e3 / rate})
    sample_rows = {}
    for n in (1, 256):
        flops = field_flops(field, n)
        for kind in ("midpoint-5x2", "heun-5x2", "dpm2-15", "tsit5", "cep-dpm2-15"):
            fn, nfe = sampler(field, energy_net, kind, n)
            sec = timeit(fn, args.repeats if n > 1 else max(args.repeats, 50))
            limit = flops * int(nfe) / (gflops * 1e9)
            row = {
                "what": f"sample {kind}, {n} states",
                "ms": 1e3 * sec,
                "nfe": int(nfe),
                "flop_limit_ms": 1e3 * limit,
                "x_flop_limit": sec / limit,
            }
            sample_rows[(kind, n)] = row
            rows.append(row)
    for n in (1, 256):
        g, u = sample_rows[("cep-dpm2-15", n)], sample_rows[("dpm2-15", n)]
        rows.append({"what": f"guided / unguided DPM-15, {n} states", "ratio": g["ms"] / u["ms"]})
        h = sample_rows[("midpoint-5x2", n)]
        rows.append(
            {
                "what": f"CEP-guided DPM-15 (QGPO) / midpoint 5 steps (QIPO-OT), {n} states",
                "ratio": g["ms"] / h["ms"],
            }
        )
        rows.append(
            {
                "what": f"DPM-15 (QIPO-Diff) / midpoint 5 steps (QIPO-OT), {n} states",
                "ratio": u["ms"] / h["ms"],
            }
        )
    result = {
        "machine": {
            "platform": platform.platform(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "matmul_gflops": gflops,
        },
        "field_params": n_params,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"ewfm core benchmark ({n_params / 1e6:.2f}M-parameter field, "
        f"matmul {gflops:.0f} GFLOP/s)"
    )
    for col in ("what", "ms", "steps/s", "NFE", "FLOP limit ms", "× limit", "ratio"):
        table.add_column(col, justify="right" if col != "what" else "left")
    fmt = lambda r, k, f: f.format(r[k]) if k in r else ""
    for r in rows:
        table.add_row(
            r["what"],
            fmt(r, "ms", "{:.2f}"),
            fmt(r, "steps_per_s", "{:.1f}"),
            fmt(r, "nfe", "{}"),
            fmt(r, "flop_limit_ms", "{:.2f}"),
            fmt(r, "x_flop_limit", "{:.1f}"),
            fmt(r, "ratio", "{:.2f}"),
        )
    Console().print(table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
