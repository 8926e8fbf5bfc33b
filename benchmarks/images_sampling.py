"""Sampling cost of EFM, ED and CEP image runs, measured in one process on one machine.

Times ``generate`` for 64 images per run (after a compile-and-warm-up call), ``--repeats``
times each, runs interleaved so that machine noise hits all of them alike; reports the
median seconds and the ratio to the first run. CEP adds the energy net's gradient to every
evaluation (one backward pass): the guidance cost EFM does not pay.

    python benchmarks/images_sampling.py runs/images/shapes-efm-quick-s5 runs/images/shapes-ed-v \\
        runs/images/shapes-cep [--beta 3] [--repeats 5]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import jax.random as jr
from _record import RESULTS, write_result

import ewfm.images as im


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories; the first is the baseline")
    ap.add_argument("--beta", type=float, default=3.0)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--out",
        default="benchmarks/results/images_sampling.json",
        help="results file, under benchmarks/results/ (only its name counts)",
    )
    args = ap.parse_args()
    runs = [im.load_run(r) for r in args.runs]
    for run in runs:  # compile and warm up
        im.generate(run, jr.PRNGKey(0), args.n, beta=args.beta, chunk=args.n)
    times: list[list[float]] = [[] for _ in runs]
    for k in range(args.repeats):
        for i, run in enumerate(runs):
            t0 = time.perf_counter()
            im.generate(run, jr.PRNGKey(1 + k), args.n, beta=args.beta, chunk=args.n)
            times[i].append(time.perf_counter() - t0)
    base = statistics.median(times[0])
    rows = []
    for path, run, ts in zip(args.runs, runs, times, strict=True):
        med = statistics.median(ts)
        rows.append(
            {
                "run": path,
                "method": run.cfg.method,
                "solver": run.sampler.solver,
                "steps": run.cfg.sample_steps,
                "median_s": med,
                "all_s": ts,
                "ratio_to_first": med / base,
            }
        )
        print(f"{path}: {run.cfg.method} {med:.2f} s per {args.n} images ({med / base:.2f}x)")
    record = {"beta": args.beta, "n": args.n, "loadavg": os.getloadavg(), "rows": rows}
    out = write_result(Path(args.out).stem, record)
    print(f"wrote {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
