"""Normalised returns of every built-in dataset, measured on scaled-down builds.

For each environment, collects ``expert``, ``medium`` and ``medium-replay`` at ``--steps``
transitions each (mixture proportions kept; nothing is written) and reports the per-episode
D4RL-normalised return, mean ± std; ``medium-expert`` is the union of ``medium`` and
``expert``, so its statistics come from theirs. Writes
``benchmarks/results/rl_datasets.json`` (with the command, commit, load and date) and
prints a markdown table.

    python benchmarks/rl_datasets.py [--steps 30000] [--envs halfcheetah,hopper,walker2d]
"""

import argparse
import time

import numpy as np
from _record import write_result


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--envs", default="halfcheetah,hopper,walker2d")
    args = p.parse_args()

    import ewfm.rl as rl

    rows = []
    for env in args.envs.split(","):
        rets: dict[str, np.ndarray] = {}
        for kind in ("expert", "medium", "medium-replay"):
            name = f"{env}-{kind}"
            t0 = time.perf_counter()
            eps, report = rl.collect_episodes(name, steps=args.steps, progress=False)
            rets[kind] = rl.normalized_score(name, [e["rewards"].sum() for e in eps])
            rows.append(
                {
                    "name": name,
                    "transitions": report.transitions,
                    "episodes": report.episodes,
                    "normalized_mean": float(rets[kind].mean()),
                    "normalized_std": float(rets[kind].std()),
                    "seconds": time.perf_counter() - t0,
                    "steps_per_s": report.steps_per_second,
                }
            )
            print(rows[-1], flush=True)
        both = np.concatenate([rets["medium"], rets["expert"]])
        rows.append(
            {
                "name": f"{env}-medium-expert",
                "transitions": rows[-2]["transitions"] + rows[-3]["transitions"],
                "episodes": len(both),
                "normalized_mean": float(both.mean()),
                "normalized_std": float(both.std()),
            }
        )
    out = write_result("rl_datasets", {"steps_per_dataset": args.steps, "rows": rows})
    print("| dataset | transitions | episodes | normalised return |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['transitions']} | {r['episodes']} | "
            f"{r['normalized_mean']:.1f} ± {r['normalized_std']:.1f} |"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
