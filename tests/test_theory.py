"""ewfm.theory: every exact check passes, and fails when fed a deliberately wrong ingredient.

Each check compiles one program for all its paths, so the passing runs cover every path (OT,
VP and, where the check has it, OT with sigma_min); the twins run on OT only (showing a
failure needs one). Each check keeps its reference and its ingredient in separate programs,
so a twin recompiles only the part holding the wrong ingredient.
"""

import math

import jax.numpy as jnp
import pytest

from ewfm import efm_loss
from ewfm.theory import CHECKS, check_names, guided_score, guided_velocity, run_checks
from ewfm.theory._exact import _LogRatio, _ScaledNet

OT = ("OT",)


def _unweighted_velocity(data, path, x, t, beta):
    return guided_velocity(data, path, x, t, 0.0)  # the unguided posterior


def _unweighted_score(data, path, x, t, beta):
    return guided_score(data, path, x, t, 0.0)


def _wrong_sign(path, score, x, t):
    return path.velocity_from_score(-score, x, t)


def _unnormalised(energy, beta):
    return jnp.exp(-beta * energy)  # no softmax normaliser


def _unnormalised_grouped(energy, beta):
    return jnp.exp(-beta * energy)


def _naive_weights(energy, beta):
    w = jnp.exp(-beta * energy)  # overflows for beta E of 1e3
    return w / jnp.mean(w)


def _efm_without_normaliser(field, path, x0, energy, beta, key, *, cond=None):
    # mean_b exp(-beta E_b) l_b instead of mean_b B softmax_b l_b
    return efm_loss(field, path, x0, energy, beta, key, cond=cond) * jnp.mean(
        jnp.exp(-beta * energy)
    )


def _classifier_guidance_as_energy(data, path, w):
    # w * log p_t(c|x): classifier guidance, which is energy guidance only at w = 1
    return _ScaledNet(_LogRatio(data, path, jnp.asarray(1.0)), jnp.asarray(w))


TWINS = {
    "lemma-3.2": {"velocity_from_score": _wrong_sign},
    "theorem-4.1-continuity": {"velocity": _unweighted_velocity},
    "theorem-4.1-pushforward": {"velocity": _unweighted_velocity},
    "theorem-4.3": {"weights": _unnormalised},
    "corollary-4.8": {"weights": _unnormalised},  # (the eps twin works too, but compiles)
    "remark-4.6": {"efm": _efm_without_normaliser},
    "corollary-4.7": {"score": _unweighted_score},
    # (pointwise only: the sampler would compile again for the wrong energy net)
    "lemma-4.10": {"energy_net": _classifier_guidance_as_energy, "sampler": False},
    "lemma-4.11": {"energy": lambda logp: -2.0 * logp},  # beta = 2 in disguise
    "eq-5.4": {"weights": _unnormalised_grouped},
    "energy-weights": {"weights": _naive_weights},
}

EXACT = check_names(trained=False)


def _run(name, **ingredients):
    if name != "energy-weights":
        ingredients.setdefault("only_paths", OT)
    return CHECKS[name](**ingredients)


PATHS_COVERED = {"lemma-3.2": 3, "theorem-4.1-continuity": 3, "energy-weights": 0}  # else 2


def test_every_exact_check_has_a_twin():
    assert set(TWINS) == set(EXACT)


@pytest.mark.parametrize("name", EXACT)
def test_exact_check_passes(name):
    res = CHECKS[name]()  # every path: the same compiled programs as for one
    assert res.passed, (res.max_error, res.errors, res.info)
    assert res.max_error <= res.tolerance <= 1e-6
    paths = {k.split("/")[0] for k in res.errors} & {"OT", "OT(smin=0.1)", "VP"}
    assert len(paths) == PATHS_COVERED.get(name, 2), sorted(res.errors)


@pytest.mark.parametrize("name", EXACT)
def test_exact_check_fails_with_a_wrong_ingredient(name):
    res = _run(name, **TWINS[name])
    assert not res.passed
    # the failure is a real error far above tolerance, not a near miss
    assert math.isnan(res.max_error) or res.max_error > 100 * res.tolerance, res.errors


def test_lemma_4_10_reports_how_far_cfg_misses():
    res = _run("lemma-4.10")
    miss = res.info["OT/w=2.0/CFG pushforward miss"]
    assert miss > 1e-2  # CFG at w = 2 does not sample p p(c|x)^2 ...
    assert res.errors["OT/w=2.0/EG pushforward"] < 1e-6  # ... energy guidance does


def test_results_are_float64_and_serialisable():
    res = _run("energy-weights")
    d = res.to_dict()
    assert set(d) == {"name", "statement", "max_error", "tolerance", "passed", "seconds"}
    assert d["passed"] is True and d["seconds"] > 0
    assert jnp.ones(1).dtype == jnp.float32  # the check's x64 context did not leak


def test_run_checks_rejects_unknown_names():
    with pytest.raises(KeyError, match=r"valid: lemma-3\.2"):
        run_checks(["lemma-3.2", "no-such-check"])


def test_trained_efm_learns_the_tilted_gaussian():
    # efm_loss on OT, 2000 Adam steps, 4096 samples (as in the CLI; 1000 steps leave the
    # covariance ~7 standard errors off): mean and covariance within 5 standard errors (from
    # the training set's effective size and the sample size) of N(m*, S*)
    res = CHECKS["trained-efm"]()
    assert res.passed, res.errors
