"""`ewfm diagnose critic` on a finished run, recorded with provenance for docs/rl.md.

Runs `ewfm.rl.diagnose_critic` (the same measurement as the command: the critic's
within-state ranking, its gain and its ||a||^2 slope against the expected return of each
support, at the behaviour model's supports and at a fixed radius, beside the truth's noise
ceiling) and stores the report as
``benchmarks/results/rl_diagnose_critic_<run>_seed<J>.json`` (+ ``.npz``: the per-support Q,
returns and actions), which ``python benchmarks/report.py`` turns into the table in
docs/rl.md.

    python benchmarks/rl_diagnose_critic.py RUN [--seed J] [--states 32] [--rollouts 8]
        [--horizon 200] [--radius 0.3]
"""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from _record import RESULTS, write_result

from ewfm.rl import diagnose_critic


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("run")
    p.add_argument("--seed", type=int, default=0, help="which seed's critic (0-based)")
    p.add_argument("--states", type=int, default=32)
    p.add_argument("--supports", type=int, default=None, help="default: the run's support")
    p.add_argument("--rollouts", type=int, default=8)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--radius", type=float, default=0.3)
    args = p.parse_args()
    name = f"rl_diagnose_critic_{Path(args.run).resolve().name}_seed{args.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        result = diagnose_critic(
            args.run, seed=args.seed, states=args.states, supports=args.supports,
            rollouts=args.rollouts, horizon=args.horizon, radius=args.radius,
            out=Path(tmp) / "report.json",
        )  # fmt: skip
        result.pop("plot", None)  # the plot stays with the run; the arrays come here
        dest = write_result(name, result)
        npz = dest.with_suffix(".npz")
        staged = RESULTS / f".{npz.name}.tmp"
        shutil.copyfile(Path(tmp) / "report.npz", staged)
        os.chmod(staged, 0o644)
        os.replace(staged, npz)  # whole, then renamed
    print(dest)


if __name__ == "__main__":
    main()
