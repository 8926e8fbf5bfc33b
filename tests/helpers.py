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
