"""A behaviour's per-state action spread, and recipe versions that keep old data buildable.

The spread is checked against closed forms: a Gaussian policy's sample spread equals its
std within the standard error computed here, a clipped one the clipped normal's std, a
deterministic one exactly 0, and a pack policy's own std its stored ``log_std``. The
rebuilt halfcheetah-medium records its noise and spread in its metadata; the recipe it
replaced stays reachable under ``halfcheetah-medium-v0``, and runs that predate recipe
versions resolve to it.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import import_extra

import ewfm.rl as rl

LEGACY = Path(__file__).parent / "data" / "legacy"
OLD_HALFCHEETAH_MEDIUM = {"policy": "halfcheetah/ppo", "stochastic": True, "noise": 0.0}


def _states(n=200, dim=3, seed=0):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (n, dim))


def test_gaussian_policy_spread_is_its_std():
    """Unclipped N(mu(s), s^2): the mean per-state sample variance estimates s^2 with
    standard deviation s^2 sqrt(2 / (K - 1)) / sqrt(n), so its root is within
    4 s / sqrt(2 n (K - 1)) of s; the reported standard error is that size too."""
    sigma, n, k = 0.3, 200, 64

    def gaussian(obs, step, eps):
        return 0.2 * obs + sigma * eps

    spread = rl.action_spread(gaussian, _states(n), samples=k, seed=1, action_dim=3)
    se = sigma / math.sqrt(2 * n * (k - 1))
    np.testing.assert_array_less(np.abs(spread.taken_std - sigma), 4 * se)
    np.testing.assert_allclose(spread.taken_std_se, se, rtol=0.25)
    assert spread.own_std is None  # a plain callable has no known Gaussian


def _clipped_normal_var(m, s):
    """Var of clip(m + s Z, -1, 1) in closed form (normal cdf and pdf)."""
    a, b = (-1 - m) / s, (1 - m) / s

    def cdf(x):
        return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    def pdf(x):
        return np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)

    mass = cdf(b) - cdf(a)
    mean = -cdf(a) + (1 - cdf(b)) + m * mass + s * (pdf(a) - pdf(b))
    second = cdf(a) + (1 - cdf(b)) + m**2 * mass + 2 * m * s * (pdf(a) - pdf(b))
    second = second + s**2 * (mass + a * pdf(a) - b * pdf(b))
    return second - mean**2


def test_clipped_gaussian_spread_is_the_clipped_normal_std():
    sigma, n, k = 0.5, 300, 64
    obs = _states(n, dim=2, seed=2)

    def clipped(obs, step, eps):
        return np.clip(obs + sigma * eps, -1.0, 1.0)

    spread = rl.action_spread(clipped, obs, samples=k, seed=3, action_dim=2)
    expected = np.sqrt(_clipped_normal_var(obs, sigma).mean(0))
    assert (expected < 0.9 * sigma).all()  # clipping matters at these means
    np.testing.assert_array_less(np.abs(spread.taken_std - expected), 4 * spread.taken_std_se)


def test_deterministic_policies_have_no_spread():
    def deterministic(obs, step, eps):
        return np.tanh(obs)

    assert (rl.action_spread(deterministic, _states(20), action_dim=3).taken_std == 0).all()
    obs = np.zeros((8, 17))
    spread = rl.action_spread("halfcheetah/ppo", obs, stochastic=False)
    assert spread.own_std is not None and (spread.own_std == 0).all()
    # float32 matmuls of identical rows may round differently in different rows of a batch
    np.testing.assert_array_less(spread.taken_std, 1e-6)


def test_pack_policy_own_std_is_its_gaussian_with_the_noise():
    """halfcheetah/ppo's Gaussian has one learned std per dimension, ``exp(log_std)``."""
    log_std = np.asarray(rl.NumpyPackPolicy("halfcheetah/ppo").params["log_std"], np.float64)
    obs = np.random.default_rng(4).normal(size=(16, 17))
    for noise in (0.0, 0.3):
        spread = rl.action_spread("halfcheetah/ppo", obs, noise=noise, samples=8)
        assert spread.own_std is not None
        np.testing.assert_allclose(spread.own_std, np.sqrt(np.exp(2 * log_std) + noise**2))
    uniform = rl.action_spread("random", obs, action_dim=6, samples=256)
    assert uniform.own_std is not None
    np.testing.assert_allclose(uniform.own_std, 1 / math.sqrt(3))
    np.testing.assert_allclose(uniform.taken_std, 1 / math.sqrt(3), atol=0.02)


def test_spread_refuses_bad_input():
    with pytest.raises(ValueError, match="samples must be >= 2"):
        rl.action_spread("halfcheetah/ppo", np.zeros((2, 17)), samples=1)
    with pytest.raises(ValueError, match="'random' needs action_dim"):
        rl.action_spread("random", np.zeros((2, 17)))


# -- recipe versions ------------------------------------------------------------------


def test_old_halfcheetah_medium_stays_reachable():
    assert rl.dataset_id("halfcheetah-medium") == "ewfm/halfcheetah/medium-v1"
    assert rl.dataset_id("halfcheetah-medium-v0") == "ewfm/halfcheetah/medium-v0"
    assert rl.dataset_id("hopper-medium") == "ewfm/hopper/medium-v0"
    assert "halfcheetah-medium-v0" in rl.older_names()
    (old,) = rl.dataset_plan("halfcheetah-medium-v0")
    assert rl.dataset_plan("ewfm/halfcheetah/medium-v0") == [old]  # a run's recorded id
    assert old.seed == 100000 and len(old.parts) == 1
    part = old.parts[0]
    assert {"policy": part.policy, "stochastic": part.stochastic, "noise": part.noise} == (
        OLD_HALFCHEETAH_MEDIUM
    )
    assert part.steps == 1_000_000
    medium, expert = rl.dataset_plan("halfcheetah-medium-expert-v0")
    assert medium == old and expert == rl.dataset_plan("halfcheetah-expert")[0]
    assert (
        rl.dataset_plan("halfcheetah-medium-expert")[0] == rl.dataset_plan("halfcheetah-medium")[0]
    )
    with pytest.raises(ValueError, match="older versions: halfcheetah-medium-v0"):
        rl.dataset_id("hopper-medium-v1")


def test_runs_without_a_recorded_id_resolve_to_version_0(tmp_path):
    """A run directory records its dataset id; one written before recipe versions records
    none, and its plain name then means the data it was trained on: version 0."""
    assert rl.recorded_dataset_id("halfcheetah-medium", None) == "ewfm/halfcheetah/medium-v0"
    assert rl.recorded_dataset_id("halfcheetah-medium", "ewfm/halfcheetah/medium-v1") == (
        "ewfm/halfcheetah/medium-v1"
    )
    assert rl.recorded_dataset_id("hopper-medium", None) == "ewfm/hopper/medium-v0"
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "rl_qipo_ot", run)
    assert rl.load_run(run).dataset_id == "ewfm/hopper/medium-v0"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "dataset": "halfcheetah-medium"}))
    assert rl.load_run(run).dataset_id == "ewfm/halfcheetah/medium-v0"


def test_rebuilt_halfcheetah_medium_records_its_noise_and_spread(tmp_path, monkeypatch):
    import_extra("rl", "gymnasium", "minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    id_ = rl.build_dataset("halfcheetah-medium", steps=2000, progress=False)
    assert id_ == "ewfm/halfcheetah/medium-v1"
    meta = rl.dataset_info(id_).recipe
    assert meta["version"] == 1
    (part,) = meta["parts"]
    assert part["policy"] == "halfcheetah/sac" and part["noise"] == 0.35
    spread = part["action_spread"]
    assert spread["states"] == 256 and spread["taken_std_min"] >= 0.2
    assert spread["own_std_mean"] >= 0.35
