"""Returns of bundled pack policies on Gymnasium v5, measured over many episodes.

``policies/index.json`` records each policy's mean and std return over 10 episodes, which
pins the mean only to ±std/√10 (±250 for hopper/sac's stochastic returns). This script
measures the policies that tests/test_rl_data.py checks against over ``--episodes``
episodes with `ewfm.rl.evaluate` (the JAX forward pass, lock-step environments), seeds
``--seed`` onwards (disjoint from the tests' and the recipes' seeds), and records mean,
std and standard error beside index.json's numbers, with z = (mean - index mean) / the
standard error of their difference. Writes ``benchmarks/results/rl_pack_returns.json``.

    python benchmarks/rl_pack_returns.py [--episodes 200] [--seed 5000000]
"""

import argparse
import time

import numpy as np
from _record import write_result

# policy, mode: what tests/test_rl_data.py compares with
CHECKED = [
    ("hopper/ars", "deterministic"),
    ("hopper/sac", "deterministic"),
    ("hopper/sac", "stochastic"),
    ("walker2d/ppo", "deterministic"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=5_000_000)
    args = p.parse_args()

    import ewfm.rl as rl

    rows = []
    for name, mode in CHECKED:
        entry = rl.pack_index()[name]
        t0 = time.perf_counter()
        policy = rl.pack_policy(name, stochastic=mode == "stochastic")
        res = rl.evaluate(policy, entry["env"], args.episodes, seed=args.seed)
        index_mean, index_std = entry[f"return_{mode}_v5"]
        se = res.std / np.sqrt(res.episodes)
        rows.append(
            {
                "policy": name,
                "mode": mode,
                "env": entry["env"],
                "episodes": res.episodes,
                "mean": res.mean,
                "std": res.std,
                "se": float(se),
                "mean_length": float(np.mean(res.lengths)),
                "index_mean": index_mean,
                "index_std": index_std,
                "z_vs_index": float((res.mean - index_mean) / np.sqrt(se**2 + index_std**2 / 10)),
                "seconds": time.perf_counter() - t0,
            }
        )
        r = rows[-1]
        print(
            f"{name:>14} {mode:>13}: {r['mean']:8.1f} ± {r['se']:6.1f} (std {r['std']:6.1f}, "
            f"length {r['mean_length']:.0f}); index.json {index_mean:8.1f} ± "
            f"{index_std / np.sqrt(10):6.1f}, z {r['z_vs_index']:+.2f}",
            flush=True,
        )
    out = write_result(
        "rl_pack_returns", {"episodes": args.episodes, "first_seed": args.seed, "rows": rows}
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
