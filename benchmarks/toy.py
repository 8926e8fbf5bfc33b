"""Toy sampling speed: milliseconds per 1,000 samples of every `ewfm.toy` method.

Trains each method briefly on one data set (sampling time does not depend on how well a
network is trained), then times drawing 1,000 samples (fastest of round-robin repeats after
compiling) with the sweep's solvers: OT methods midpoint (RK2) 10 steps, VP methods DPM-Solver-2M
20 steps -- 20 field evaluations each. Ratios to EFM are measured in the same run; QGPO /
ED isolates the cost of the energy gradient (same network, same solver). Writes
``benchmarks/results/toy.json`` and prints a table; the machine is shared, so the load
average is recorded too.

    python benchmarks/toy.py [--data 8gaussians] [--beta 3] [--repeats 15]
        [--out benchmarks/results/toy.json]
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.random as jr
from _record import RESULTS, write_result

import ewfm.toy as toy


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", default="8gaussians", choices=toy.DATASETS)
    ap.add_argument("--beta", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=200, help="training steps (speed only)")
    ap.add_argument(
        "--out",
        default="benchmarks/results/toy.json",
        help="results file, under benchmarks/results/ (only its name counts)",
    )
    args = ap.parse_args()

    cfg = toy.ToyConfig(steps=args.steps)
    problem = toy.make_problem(args.data, cfg)
    nets = {}

    def get(kind, beta):
        if (kind, beta) not in nets:
            nets[(kind, beta)] = toy.train_network(
                kind, problem.x, problem.energy, beta, cfg, jr.key(0)
            )
        return nets[(kind, beta)]

    models = {m: toy.build_model(m, args.beta, cfg, get) for m in toy.METHODS}
    for model in models.values():
        toy.draw(model, jr.key(0), args.n).block_until_ready()  # compile and warm up
    # Round-robin over methods and keep each one's fastest repeat: on a shared machine the
    # minimum is the least load-biased estimate, and interleaving spreads load bursts evenly.
    times: dict[str, list[float]] = {m: [] for m in models}
    for r in range(args.repeats):
        for m, model in models.items():
            t0 = time.perf_counter()
            toy.draw(model, jr.key(r + 1), args.n).block_until_ready()
            times[m].append(time.perf_counter() - t0)
    rows = {}
    for m, model in models.items():
        rows[m] = {
            "ms_per_1000": 1000 * min(times[m]) * 1000 / args.n,
            "median_ms_per_1000": 1000 * statistics.median(times[m]) * 1000 / args.n,
            "solver": model.sampler.solver,
            "steps": model.sampler.steps,
            "nfe": model.sampler.nfe,
        }
    ref = rows["efm"]["ms_per_1000"]
    for r in rows.values():
        r["ratio_to_efm"] = r["ms_per_1000"] / ref
    result = {
        "data": args.data,
        "beta": args.beta,
        "n": args.n,
        "repeats": args.repeats,
        "rows": rows,
        "qgpo_over_efm": rows["qgpo"]["ms_per_1000"] / ref,
        "qgpo_over_ed": rows["qgpo"]["ms_per_1000"] / rows["ed"]["ms_per_1000"],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "load_avg_1min": os.getloadavg()[0],
        },
    }
    print(f"{'method':10s} {'solver':9s} {'NFE':>4s} {'ms/1000':>9s} {'vs efm':>7s}")
    for m, r in rows.items():
        print(
            f"{m:10s} {r['solver']:9s} {r['nfe']:4d} {r['ms_per_1000']:9.1f} "
            f"{r['ratio_to_efm']:7.2f}"
        )
    print(f"QGPO / EFM = {result['qgpo_over_efm']:.2f}; QGPO / ED = {result['qgpo_over_ed']:.2f}")
    out = write_result(Path(args.out).stem, result)
    print(f"wrote {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
