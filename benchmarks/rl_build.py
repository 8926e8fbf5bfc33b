"""Dataset-building speed: simulated environment steps per second of `ewfm.rl` recipes.

Collects (without writing) a recipe at a given size for each (environments, workers)
setting and reports steps/s, plus the raw single-environment Gymnasium step rate as the
ceiling of one core. Writes ``benchmarks/results/rl_build.json`` (with the command, commit,
load and date) and prints a table. The machine may be shared: the load average before the
run and at its end are recorded.

    python benchmarks/rl_build.py [--name hopper-medium] [--steps 100000]
        [--settings 32x1,32x2]
"""

import argparse
import os
import time

import numpy as np
from _record import write_result


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
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--name", default="hopper-medium")
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--settings", default="32x1,32x2", help="ENVSxWORKERS, comma separated")
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
    result = {"name": args.name, "steps": args.steps, "loadavg_before": load_before, "rows": rows}
    out = write_result("rl_build", result)  # its provenance holds the load at the end
    for r in rows:
        extra = f"  ({r['minutes_per_1M']:.1f} min per 1M)" if "minutes_per_1M" in r else ""
        print(f"{r['setting']:>28}: {r['steps_per_s']:8.0f} steps/s{extra}")
    print(f"load average before/after: {load_before} / {os.getloadavg()}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
