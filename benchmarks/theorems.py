"""The theorem checks' errors and timings, as a results file (what `ewfm verify-theorems` prints).

Runs every exact check (and, with ``--trained``, the trained ones) through
`ewfm.theory.run_checks` and writes one row per check (subject, max error, tolerance,
pass/fail, seconds, and the check's ``info``: what it measures besides its errors, such as
z-scores or how far CFG misses its target) plus the total wall and CPU seconds, to
``benchmarks/results/theorems.json`` (or ``theorems_trained.json``), with provenance.

    python benchmarks/theorems.py [--trained]
"""

import argparse
import math
import time

from _record import write_result

from ewfm.theory import run_checks


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--trained", action="store_true", help="also the trained checks (minutes)")
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    results = run_checks(trained=args.trained)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [{**r.to_dict(), "info": {k: _finite(v) for k, v in r.info.items()}} for r in results]
    name = "theorems_trained" if args.trained else "theorems"
    write_result(
        name,
        {"rows": rows, "seconds_total": wall, "cpu_seconds_total": cpu, "trained": args.trained},
    )
    for r in rows:
        print(
            f"{r['name']:32s} {r['subject']:12s} {r['max_error']} {r['passed']} {r['seconds']:.1f}"
        )
    n_ok = sum(r["passed"] for r in rows)
    print(f"{len(rows)} checks, {n_ok} passed, {wall:.1f} s wall, {cpu:.1f} CPU-s")


if __name__ == "__main__":
    main()
