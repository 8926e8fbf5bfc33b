"""Dataset-building speed: simulated environment steps per second of `ewfm.rl` recipes.

Collects (without writing) a recipe at a given size for each (environments, workers)
setting and reports steps/s, plus the raw single-environment Gymnasium step rate as the
ceiling of one core. Writes ``benchmarks/results/rl_build.json`` and prints a table. The
machine is shared: note the load average printed with the results.

    python benchmarks/rl_build.py [--name hopper-medium] [--steps 100000]
        [--settings 32x1,32x2] [--out benchmarks/results/rl_build.json]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def raw_env_rate(env_id: str, steps: int) -> float:
    import ewfm.rl as rl

    env = rl.make_env(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-0.3, 0.3, env.action_space.shape))
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="hopper-medium")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--settings", default="32x1,32x2", help="ENVSxWORKERS, comma separated")
    p.add_argument("--out", default="benchmarks/results/rl_build.json")
    args = p.parse_args()

    import ewfm.rl as rl

    env_id = rl.env_id_for(args.name)
    rows = []
    load_before = os.getloadavg()
    rows.append({"setting": "raw gymnasium step, 1 env", "steps_per_s": raw_env_rate(env_id, 5000)})
    for setting in args.settings.split(","):
        n_envs, workers = (int(x) for x in setting.split("x"))
        t0 = time.perf_counter()
        _, report = rl.collect_episodes(
            args.name, steps=args.steps, n_envs=n_envs, workers=workers, progress=False
        )
        wall = time.perf_counter() - t0
        rows.append(
            {
                "setting": f"{n_envs} envs, {workers} worker(s)",
                "steps_per_s": report.simulated_steps / wall,
                "simulated_steps": report.simulated_steps,
                "kept_transitions": report.transitions,
                "wall_s": wall,
                "minutes_per_1M": 1e6 / (report.simulated_steps / wall) / 60,
            }
        )
    result = {
        "name": args.name,
        "steps": args.steps,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    for r in rows:
        extra = f"  ({r['minutes_per_1M']:.1f} min per 1M)" if "minutes_per_1M" in r else ""
        print(f"{r['setting']:>28}: {r['steps_per_s']:8.0f} steps/s{extra}")
    print(f"load average before/after: {load_before} / {result['loadavg_after']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
