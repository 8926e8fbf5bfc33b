"""Per-state action spread of every built-in recipe, beside the return of its episodes.

QIPO re-weights the behaviour's own actions within each state, so it needs a behaviour
whose actions differ within a state. For every built-in recipe (and every older version a
pinned name still builds) this collects the recipe at ``--steps`` transitions (mixture
proportions kept, the recipe's own seeds, nothing written) and records, per part, what
`ewfm.rl.action_spread` measures at up to 256 of the part's recorded states with 64
draws each (the same numbers a full build writes into the dataset's metadata): the
policy's own std, ``sqrt(sigma^2 + noise^2)``, and the std of the actions it takes after
squashing, noise and clipping, per dimension. The normalised return of the episodes is
given as mean ± standard error. ``medium-expert`` is the union of ``medium`` and
``expert``, so it has no rows of its own. Writes ``benchmarks/results/rl_action_spread.json``.

    python benchmarks/rl_action_spread.py [--steps 20000] \
        [--steps-for halfcheetah-medium=100000,halfcheetah-medium-v0=100000]
"""

import argparse
import time

import numpy as np
from _record import write_result


def _sizes(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, text.split(",")):
        name, _, steps = item.partition("=")
        out[name] = int(steps)
    return out


def measure(name: str, steps: int) -> dict:
    """One recipe collected at ``steps`` transitions: its parts' spreads and its returns."""
    import ewfm.rl as rl

    t0 = time.perf_counter()
    eps, report = rl.collect_episodes(name, steps=steps, progress=False)
    score = rl.normalized_score(name, [e["rewards"].sum() for e in eps])
    keep = ("segment", "policy", "stochastic", "noise", "episodes", "transitions")
    return {
        "name": name,
        "dataset_id": rl.dataset_id(name),
        "steps": steps,
        "transitions": report.transitions,
        "episodes": report.episodes,
        "normalized_mean": float(score.mean()),
        "normalized_std": float(score.std()),
        "normalized_se": float(score.std(ddof=1) / np.sqrt(len(score))) if len(score) > 1 else None,
        "parts": [
            {**{k: p[k] for k in keep}, "action_spread": p["action_spread"]} for p in report.parts
        ],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--steps", type=int, default=20_000, help="transitions per recipe")
    p.add_argument("--steps-for", default="", help="NAME=STEPS,...: other sizes for some")
    p.add_argument("--names", default="", help="comma-separated names (default: every one)")
    args = p.parse_args()

    import ewfm.rl as rl

    sizes = _sizes(args.steps_for)
    every = [n for n in rl.builtin_names() + rl.older_names() if "medium-expert" not in n]
    names = args.names.split(",") if args.names else every
    rows = []
    for name in names:
        rows.append(measure(name, sizes.get(name, int(args.steps))))
        r = rows[-1]
        for part in r["parts"]:
            s = part["action_spread"] or {}
            print(
                f"{name:>28} {part['policy']:>17} noise {part['noise']:<4}: own std "
                f"{s.get('own_std_mean')}, taken std {s.get('taken_std_mean')} "
                f"({s.get('taken_std_min')}-{s.get('taken_std_max')}); score "
                f"{r['normalized_mean']:.1f} ± {r['normalized_se'] or 0:.1f} over "
                f"{r['episodes']} episodes ({r['seconds']:.0f} s)",
                flush=True,
            )
    out = write_result(
        "rl_action_spread",
        {"steps_per_dataset": args.steps, "steps_for": sizes, "rows": rows},
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
