import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import ewfm


@pytest.fixture(autouse=True)
def _x64(x64):
    yield


def energies(n=16, seed=0):
    return jr.normal(jr.PRNGKey(seed), (n,), jnp.float64) * 3


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 7.0])
def test_sum_to_batch_and_match_naive(beta):
    e = energies()
    w = ewfm.energy_weights(e, beta)
    assert jnp.isclose(w.sum(), e.shape[0])
    naive = np.exp(-beta * np.asarray(e))  # safe here: |beta E| < 100
    assert np.allclose(w, len(e) * naive / naive.sum(), rtol=1e-12)


def test_invariant_to_constant_shift():
    e = energies()
    assert jnp.allclose(ewfm.energy_weights(e, 2.0), ewfm.energy_weights(e + 1234.5, 2.0))


def test_beta_zero_gives_ones():
    assert jnp.array_equal(ewfm.energy_weights(energies(), 0.0), jnp.ones(16))


def test_huge_beta_energy_is_finite_and_exact():
    # beta * E up to 1e4: exp would overflow; the weights are still exact
    e = jnp.array([1e4, 1e4 + 1.0, 2e4, 1e4 - 3.0])
    w = ewfm.energy_weights(e, 1.0)
    assert jnp.all(jnp.isfinite(w))
    d = -(e - e.min())
    expect = 4 * np.exp(d) / np.exp(d).sum()
    assert np.allclose(w, expect, rtol=1e-12, atol=1e-300)
    w = ewfm.energy_weights(jnp.array([-1e4, 1e4]), 1.0)
    assert jnp.allclose(w, jnp.array([2.0, 0.0]))


def test_grouped_rows_sum_to_m_and_match_rowwise():
    e = jr.normal(jr.PRNGKey(3), (5, 7), jnp.float64)
    w = ewfm.grouped_energy_weights(e, 1.5)
    assert jnp.allclose(w.sum(axis=1), 7.0)
    for i in range(5):
        assert jnp.allclose(w[i], ewfm.energy_weights(e[i], 1.5))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="beta"):
        ewfm.energy_weights(energies(), -0.5)
    with pytest.raises(ValueError, match="beta"):
        ewfm.energy_weights(energies(), float("nan"))
    with pytest.raises(ValueError, match="energy is empty"):
        ewfm.energy_weights(jnp.zeros((0,)), 1.0)
    with pytest.raises(Exception, match="energy contains NaN or inf"):
        ewfm.energy_weights(jnp.array([0.0, jnp.inf]), 1.0)


def test_traced_negative_beta_is_refused_under_jit():
    f = jax.jit(ewfm.energy_weights)
    with pytest.raises(Exception, match="beta must be a finite number >= 0"):
        f(energies(), jnp.asarray(-1.0))
