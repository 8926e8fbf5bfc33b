"""Shared by the tests: closed forms (Gaussian data on a Gaussian path) and the legacy-run check."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np


def gaussian_fields(path, m, s):
    """Exact velocity, score and eps of ``p_t`` for data ``N(m, diag(s^2))``.

    ``p_t = N(alpha m, alpha^2 s^2 + sigma^2)``. Its flow map is
    ``x_t = alpha_t m + sd_t z`` with ``sd_t = sqrt(alpha^2 s^2 + sigma^2)``, so
    ``v = alpha' m + (sd'/sd)(x - alpha m)`` -- derived without Lemma 3.2.
    """

    def sd(t):
        return jnp.sqrt(path.alpha(t) ** 2 * s**2 + path.sigma(t) ** 2)

    def d_sd(t):
        a, sg = path.alpha(t), path.sigma(t)
        return (a * path.d_alpha(t) * s**2 + sg * path.d_sigma(t)) / sd(t)

    def velocity(x, t, cond=None):
        return path.d_alpha(t) * m + d_sd(t) / sd(t) * (x - path.alpha(t) * m)

    def score(x, t, cond=None):
        return -(x - path.alpha(t) * m) / sd(t) ** 2

    def eps(x, t, cond=None):
        return -path.sigma(t) * score(x, t)

    def pushforward(x1, t_start, t_end):
        z = (x1 - path.alpha(t_start) * m) / sd(t_start)
        return path.alpha(t_end) * m + sd(t_end) * z

    return velocity, score, eps, pushforward


LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def legacy_close(actual, expected) -> None:
    """Samples of a legacy run (tests/data/legacy) against those the old code wrote.

    Bit for bit on the CPU model that wrote them (machine.json); elsewhere to float32
    rounding, because XLA's CPU kernels round differently across CPU models.
    """
    cpu = json.loads((LEGACY / "machine.json").read_text())["cpu"]
    if _cpu_model().startswith(cpu):
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
    else:
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=1e-5, atol=1e-6)


def import_extra(extra: str, *modules: str) -> None:
    """Import an optional extra's packages before a test file uses them.

    A missing one is an error, so that a CI without the extra fails instead of skipping
    the file silently (CI installs ``.[dev]``, which holds every extra); with
    ``EWFM_ALLOW_MISSING_EXTRAS=1`` the file is skipped instead, for a partial install.
    """
    import importlib
    import os

    import pytest

    for module in modules:
        if os.environ.get("EWFM_ALLOW_MISSING_EXTRAS") == "1":
            pytest.importorskip(module)
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(
                f"{module} is missing: install the [{extra}] extra (pip install -e '.[dev]'), "
                "or set EWFM_ALLOW_MISSING_EXTRAS=1 to skip the tests that need it"
            ) from e


_KILL_CHILD = """
import os, sys, time
cfg_path, out, stage, reuse = sys.argv[1:5]
target = os.path.join(out, "checkpoints", stage + ".eqx")


class Gate:
    # stdout that holds the run at its first write after the stage's first checkpoint (the
    # epoch's progress line), so the parent's SIGKILL lands inside the stage, never later
    def write(self, s):
        while os.path.exists(target):
            time.sleep(1.0)
        return sys.__stdout__.write(s)

    def flush(self):
        sys.__stdout__.flush()

    def isatty(self):
        return False


sys.stdout = Gate()
import ewfm.rl as rl

cfg = rl.read_config(cfg_path)
resume = os.path.exists(os.path.join(out, "config.json"))
rl.train(cfg, out, resume=resume, reuse=reuse or None, progress=True, log=print)
sys.exit("the run finished: it was never killed")
"""


def kill_in_stage(cfg, out, stage: str, *, reuse=None, cache=None, timeout: float = 600.0):
    """Train ``cfg`` into ``out`` (resuming it when it holds a run) in a subprocess and
    SIGKILL it right after ``stage``'s first checkpoint appears; returns that checkpoint's
    epoch (read after the kill).

    The child's progress line after that checkpoint blocks until it is killed, so the kill
    lands between the stage's first and second epoch whatever the machine's speed. ``cache``:
    a JAX compilation-cache directory shared by the children (the numbers are the same; only
    compiling is skipped).
    """
    import dataclasses
    import os
    import signal
    import subprocess
    import sys
    import time

    out = Path(out)
    target = out / "checkpoints" / f"{stage}.eqx"
    assert not target.exists(), f"{target} exists before the run: nothing would be killed"
    cfg_path = out.parent / f"{out.name}.config.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(cfg)))
    env = dict(os.environ, EWFM_TYPECHECK="0")  # shape checks only cost time here
    if cache is not None:
        env |= {
            "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        }
    log = out.parent / f"{out.name}.{stage}.log"
    with open(log, "w") as f:
        args = [sys.executable, "-c", _KILL_CHILD, str(cfg_path), str(out), stage, str(reuse or "")]
        child = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        try:
            while not target.exists():
                if child.poll() is not None:
                    raise AssertionError(f"the run ended before {stage}: {log.read_text()}")
                if time.monotonic() - t0 > timeout:
                    raise AssertionError(f"no {stage} checkpoint in {timeout} s: {log.read_text()}")
                time.sleep(0.01)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL, log.read_text()
    with open(target, "rb") as f:
        return int(json.loads(f.readline())["epoch"])


TINY_RL = dict(
    subset=600, steps_per_epoch=10, width=32, depth=2, critic_width=32, critic_depth=1,
    bc_epochs=1, critic_mc_epochs=1, critic_epochs=1, qipo_epochs=1, renew_every=1, support=4,
    critic_support=3, qipo_states=8, batch_size=64, critic_batch=64, sample_steps=2,
    eval_every=0, final_episodes=1, eval_max_steps=10,
)  # fmt: skip
"""`ewfm.rl.TrainConfig` overrides for a run that trains every stage in seconds (with the
`tiny_dataset` fixture): a check of plumbing, not of learning."""
