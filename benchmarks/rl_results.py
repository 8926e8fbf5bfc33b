"""Collect finished `ewfm train` run directories into benchmarks/results/rl_runs.json.

One row per run: the final policy's score (mean over seeds ± standard error over seeds),
its own BC warm-up scored on the same episode seeds, the per-seed gain over that BC, and
the best periodic evaluation during training (reported separately and labelled; the
table's score is the final policy); also every periodic evaluation, the support-set
statistics at each renewal, and the stages' seconds and steps/s. `python
benchmarks/report.py` turns the file into the RL tables of README.md and docs/rl.md.

    python benchmarks/rl_results.py RUN_DIR [RUN_DIR ...]   # replaces rows of the same run
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any

from _record import RESULTS, write_result

from ewfm.rl import read_config, resolve_config

# support-set statistics logged at each renewal: mean raw Q, the mean over states of Q's std
# over a state's supports, and the mean largest / dataset-action weight (out of M)
RENEWAL_KEYS = ("q_mean", "q_std_within", "w_max_mean", "w_data_mean", "q_trust")

# settings that make a run a variant of its method: those of them whose value (read with
# `ewfm.rl.read_config`, so older run dirs get what they ran with) differs from the quick preset's
VARIANT_KEYS = ("critic", "reward_scale", "critic_warm_start", "q_trust")


def _mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def collect(run: Path) -> dict[str, Any]:
    """The table row of one finished run directory (one-line error if unfinished)."""
    if not (run / "summary.json").is_file():
        raise SystemExit(
            f"{run}: no summary.json; finish it with `ewfm train --resume --out {run}`."
        )
    s = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    method = s.get("method", s.get("algo"))
    seeds = s["seed_scores"]
    mean, se = _mean_se(seeds)
    row: dict[str, Any] = {
        "run": str(run),
        "dataset": s["dataset"],
        "method": method,
        "seeds": len(seeds),
        "seed": s["seed"],
        "episodes_per_seed": s["episodes"] // len(seeds),
        "score_mean": mean,
        "score_se": se,
        "seed_scores": seeds,
        "episode_score_mean": s["score_mean"],
        "episode_score_std": s["score_std"],
        "beta": cfg.get("beta"),
        "q_norm": cfg.get("q_norm", "none"),
        "variant": variant(run),
        "bc_mean": None,
        "bc_se": None,
        "seed_gain_over_bc": None,
    }
    bc = s.get("behaviour_seed_scores")
    if bc:
        row["bc_mean"], row["bc_se"] = _mean_se(bc)
        row["bc_seed_scores"] = bc
        row["seed_gain_over_bc"] = [a - b for a, b in zip(seeds, bc, strict=True)]
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m["score_mean"] for m in metrics if "score_mean" in m]
    row["best_eval"] = max(evals) if evals else None
    row["wall_seconds"] = s.get("wall_seconds_this_session")
    row["stage_seconds"] = s.get("stage_seconds_this_session")
    row["steps_per_s"] = s.get("steps_per_s")
    row["periodic_evals"] = [
        {"stage": m["stage"], "epoch": m["epoch"], "episodes": m.get("episodes"),
         "score_mean": m["score_mean"], "seed_scores": m.get("seed_scores")}
        for m in metrics if "score_mean" in m
    ]  # fmt: skip
    row["renewals"] = [
        {"epoch": m["epoch"], **{k: m[k] for k in RENEWAL_KEYS if k in m}}
        for m in metrics if "q_mean" in m
    ]  # fmt: skip
    row["extras"] = _extras(run)
    return row


def variant(run: Path) -> str:
    """The run's settings among `VARIANT_KEYS` that differ from today's quick preset."""
    cfg, quick = read_config(run / "config.json"), resolve_config("quick")
    return ", ".join(
        f"{k} {getattr(cfg, k)}" for k in VARIANT_KEYS if getattr(cfg, k) != getattr(quick, k)
    )


def _extras(run: Path) -> list[dict[str, Any]]:
    """The run's `ewfm evaluate` records (evaluations.jsonl): what was scored (model, how
    actions were extracted), with per-seed means, for the columns beside the policy's own."""
    p = run / "evaluations.jsonl"
    if not p.exists():
        return []
    out = []
    for ev in map(json.loads, p.read_text().splitlines()):
        mean, se = _mean_se(ev["seed_scores"])
        out.append(
            {"model": ev.get("model", "policy"), "extract": ev.get("extract", "sample"),
             "checkpoint": Path(ev["checkpoint"]).name, "episodes": ev["episodes"],
             "seed": ev.get("seed"), "score_mean": mean, "score_se": se,
             "seed_scores": ev["seed_scores"]}
        )  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    path = RESULTS / "rl_runs.json"
    old = json.loads(path.read_text())["runs"] if path.exists() else []
    new = [collect(r) for r in args.runs]
    names = {r["run"] for r in new}
    rows = [r for r in old if r["run"] not in names] + new
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["run"]))
    write_result("rl_runs", {"runs": rows})
    for r in new:
        print(f"{r['dataset']} {r['method']}: {r['score_mean']:.1f} ± {r['score_se']:.1f}")


if __name__ == "__main__":
    main()
