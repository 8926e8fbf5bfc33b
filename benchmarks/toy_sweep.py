"""Toy guidance quality: every `ewfm.toy` method scored against the exact target.

Runs `ewfm.toy.sweep` (data sets × methods × betas; networks that do not depend on beta are
trained once per data set) in a temporary directory and keeps, for every run, the sliced
Wasserstein-2 distance to exact target samples and its noise floor, the mean energy against
the exact one, and the NLL of exact samples; per method, the summaries the docs quote
(median SW2 / floor, mean absolute error of the mean energy, the guidance goals met), plus
the sweep's wall and CPU seconds. Writes ``benchmarks/results/<--name>.json``.

    python benchmarks/toy_sweep.py --preset default --datasets 8gaussians moons --betas 0 3
    python benchmarks/toy_sweep.py --preset default --name toy_sweep_full  # 6 × 6 × 4 runs; long
    python benchmarks/toy_sweep.py --preset quick --name toy_sweep_quick   # 300 steps; seconds

Without ``--datasets`` / ``--betas`` the preset's own lists are used (the quick preset's two
data sets and betas 0 and 3; every data set and betas 0, 1, 3, 10 otherwise).

Pin it to a core of its own on a shared machine (``taskset -c 1``): the CPU seconds are
recorded beside the wall time, and the load average in the provenance.
"""

import argparse
import os
import tempfile
import time
from typing import Any

import numpy as np
from _record import write_result

import ewfm.toy as toy


def per_method(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Median SW2 / floor, mean |mean energy − exact|, and goals met, for each method."""
    out: dict[str, dict[str, Any]] = {}
    for m in summary["methods"]:
        rs = [r for r in summary["records"] if r["method"] == m]
        gs = [g for g in summary["goals"] if g["method"] == m]
        row: dict[str, Any] = {
            "median_sw2_over_floor": float(np.median([r["sw2"] / r["floor"] for r in rs])),
            "mean_abs_energy_error": float(
                np.mean([abs(r["mean_energy"] - r["exact_mean_energy"]) for r in rs])
            ),
        }
        if gs:
            row["goal_cases"] = len(gs)
            row["ok_fm"] = sum(bool(g.get("ok_fm")) for g in gs)
            row["ok_qgpo"] = sum(bool(g.get("ok_qgpo")) for g in gs)
            row["within_115_qgpo"] = sum(g.get("ratio_qgpo", np.inf) <= 1.15 for g in gs)
        out[m] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--preset", default="default", choices=sorted(toy.PRESETS))
    ap.add_argument("--datasets", nargs="+", choices=toy.DATASETS, help="default: the preset's")
    ap.add_argument("--betas", nargs="+", type=float, help="default: the preset's")
    ap.add_argument("--name", default="toy_sweep", help="results file name, without .json")
    args = ap.parse_args()

    cfg = toy.resolve_config(args.preset)
    quick = args.preset == "quick"
    datasets = args.datasets or (toy.QUICK_DATASETS if quick else toy.DATASETS)
    betas = args.betas or (toy.QUICK_BETAS if quick else toy.SWEEP_BETAS)
    cpu0, t0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = toy.sweep(os.path.join(tmp, "sweep"), cfg, datasets=datasets, betas=betas)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    keep = ("data", "method", "beta", "sw2", "floor", "mean_energy", "exact_mean_energy", "nll")
    record = {
        "preset": args.preset,
        "config": summary["config"],
        "datasets": summary["datasets"],
        "methods": summary["methods"],
        "betas": summary["betas"],
        "networks_trained": summary["networks_trained"],
        "wall_s": wall,
        "cpu_s": cpu,
        "train_wall_s": summary["train_seconds"],
        "records": [{k: r[k] for k in keep} for r in summary["records"]],
        "goals": summary["goals"],
        "per_method": per_method(summary),
    }
    path = write_result(args.name, record)
    print(f"{len(record['records'])} runs, {wall:.0f} s wall, {cpu:.0f} CPU-s -> {path}")
    for m, row in record["per_method"].items():
        print(f"  {m:9s} median SW2/floor {row['median_sw2_over_floor']:.2f}, "
              f"mean |dE| {row['mean_abs_energy_error']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
