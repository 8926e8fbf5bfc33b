"""Write the legacy-run fixture: tiny run directories and their samples, made by the code
BEFORE the run-skeleton refactor (commit f8dc87a). `tests/test_legacy_runs.py` loads them with
the current code and checks that they sample the same numbers.

Kept for the record; it runs only against that commit's API:
    git worktree add /tmp/old f8dc87a && cd /tmp/old && python tests/data/legacy/make.py OUT
"""

import json
import os
import platform
import shutil
import sys
from pathlib import Path

import jax.random as jr
import numpy as np

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
expected: dict[str, np.ndarray] = {}

# -- RL: QIPO-OT with two seeds and QGPO (guided) on a 1,500-step hopper-medium build --------
os.environ["MINARI_DATASETS_PATH"] = str(out / "_minari")
import ewfm  # noqa: E402
from ewfm.rl import ensure_dataset, resolve_config, train  # noqa: E402
from ewfm.rl._config import config_from_json  # noqa: E402
from ewfm.rl._pipeline import (  # noqa: E402
    make_policy,
    stacked_energy_nets,
    stacked_fields,
)

ensure_dataset("hopper-medium", steps=1500, progress=False)
TINY = dict(
    subset=600, steps_per_epoch=10, width=32, depth=2, critic_width=32, critic_depth=1,
    bc_epochs=1, critic_mc_epochs=1, critic_epochs=1, qipo_epochs=2, renew_every=1, support=4,
    critic_support=3, qipo_states=8, batch_size=64, critic_batch=64, sample_steps=2,
    eval_every=0, final_episodes=1, eval_max_steps=10, cep_epochs=1,
)  # fmt: skip
obs = np.asarray(jr.normal(jr.key(7), (2 * 5, 11)), np.float32)  # 5 states per seed
for name, algo in (("rl_qipo_ot", "qipo-ot"), ("rl_qgpo", "qgpo")):
    cfg = resolve_config("quick", overrides=dict(TINY, dataset="hopper-medium", algo=algo, seeds=2))
    run = out / f"{name}_full"
    train(cfg, run, progress=False, log=lambda s: None)
    keep = out / name
    (keep / "checkpoints").mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "obs_stats.json", "summary.json", "metrics.jsonl"):
        shutil.copyfile(run / f, keep / f)
    shutil.copyfile(run / "checkpoints" / "policy.eqx", keep / "checkpoints" / "policy.eqx")
    shutil.rmtree(run)
    c = config_from_json(keep / "config.json")
    stats = json.loads((keep / "obs_stats.json").read_text())
    ks = jr.split(jr.key(0), c.seeds)
    like = (
        stacked_fields(c, 11, 3, ks),
        stacked_energy_nets(c, 11, 3, ks) if algo == "qgpo" else None,
    )
    (field, enet), _ = ewfm.load_checkpoint(keep / "checkpoints" / "policy.eqx", like)
    pol = make_policy(c, field, enet, stats["mean"], stats["std"], 3)
    expected[f"{name}/actions"] = np.asarray(pol(obs, jr.key(11)))
expected["rl/obs"] = obs
shutil.rmtree(out / "_minari")

# -- images: tiny EFM (beta input, residual net) and CEP runs ---------------------------------
from ewfm.images import (  # noqa: E402
    ImageConfig,
    generate,
    load_run,
    train as itrain,
)

for name, over in (("images_efm", {}), ("images_cep", {"method": "cep"})):
    icfg = ImageConfig.quick(
        size=8, channels=(8, 16), steps=20, batch_size=32, n_data=128, held_out=16,
        sample_steps=2, **over,
    )  # fmt: skip
    itrain(icfg, out / name)
    r = load_run(out / name)
    expected[f"{name}/samples"] = generate(r, jr.key(5), 8, beta=3.0, chunk=8)

# -- toy: a tiny EFM and QGPO run (no checkpoint; the samples of a fixed config) ---------------
from ewfm.toy import ToyConfig, run_experiment  # noqa: E402

tcfg = ToyConfig(n_data=512, steps=40, n_eval=256, n_nll=50, batch_size=128)
for method in ("efm", "qgpo"):
    expected[f"toy_{method}/samples"] = run_experiment("8gaussians", method, 3.0, tcfg).samples

np.savez(out / "expected.npz", **expected)
(out / "machine.json").write_text(
    json.dumps({"processor": platform.processor(), "machine": platform.machine(),
                "cpu": Path("/proc/cpuinfo").read_text().split("model name")[1].split("\n")[0]
                .strip(" :\t"), "commit": "f8dc87a"}, indent=2) + "\n"
)  # fmt: skip
