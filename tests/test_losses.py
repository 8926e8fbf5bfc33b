"""Losses against expectations computed in closed form (Monte Carlo with CLT tolerances)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import TypeCheckError

import ewfm

KEY = jr.PRNGKey(0)


def const_field(c):
    return lambda x, t, cond: jnp.broadcast_to(c, x.shape)


def two_point_data(n, d=2):
    pts = jnp.array([[1.0, -2.0], [-0.5, 3.0]])[:, :d]
    x0 = jnp.repeat(pts, n, axis=0)
    energy = jnp.repeat(jnp.array([0.0, 1.0]), n)
    return pts, x0, energy


def test_efm_weights_the_conditional_target():
    # OT path, constant field c: E||c - (eps - x0)||^2 = ||c + x0||^2 + d per data point, so
    # L_CEFM = sum_i pi_i (||c + x0_i||^2 + d) with pi = softmax(-beta E).
    with jax.enable_x64(True):
        n, beta, c = 100_000, np.log(3.0), jnp.array([0.2, -0.1])
        pts, x0, energy = two_point_data(n)
        pi = np.array([3.0, 1.0]) / 4.0
        per = np.sum((np.asarray(c) + np.asarray(pts)) ** 2, axis=1) + 2
        expect = float(pi @ per)
        got = ewfm.efm_loss(const_field(c), ewfm.OTPath(), x0, energy, beta, KEY)
        # per-sample loss variance is O(10); sd of the mean over 2n samples < 0.02
        assert abs(float(got) - expect) < 0.05, (got, expect)
        unweighted = float(per.mean())
        assert abs(unweighted - expect) > 0.5  # the weighting is 10x the tolerance


def test_ed_loss_and_denoising_target():
    # OT path, field f(x, t) = x: eps-loss E||x_t - eps||^2 = E(1-t)^2 (||x0||^2 + d)
    # = (||x0||^2 + d) / 3
    with jax.enable_x64(True):
        n, beta = 100_000, np.log(3.0)
        pts, x0, energy = two_point_data(n)
        field = lambda x, t, c: x
        per = (np.sum(np.asarray(pts) ** 2, axis=1) + 2) / 3
        got = ewfm.ed_loss(field, ewfm.OTPath(), x0, energy, beta, KEY)
        assert abs(float(got) - (0.75 * per[0] + 0.25 * per[1])) < 0.05
        plain = ewfm.denoising_loss(field, ewfm.OTPath(), x0, KEY)
        assert abs(float(plain) - per.mean()) < 0.05


@pytest.mark.parametrize("path", [ewfm.OTPath(), ewfm.VPPath()], ids=repr)
def test_beta_zero_equals_unweighted(path):
    x0 = jr.normal(KEY, (64, 3))
    energy = jr.normal(jr.PRNGKey(1), (64,)) * 10
    field = ewfm.MLPField(3, width=32, depth=2, key=jr.PRNGKey(2))
    k = jr.PRNGKey(3)
    assert jnp.allclose(
        ewfm.efm_loss(field, path, x0, energy, 0.0, k), ewfm.cfm_loss(field, path, x0, k)
    )
    assert jnp.allclose(
        ewfm.ed_loss(field, path, x0, energy, 0.0, k), ewfm.denoising_loss(field, path, x0, k)
    )


def test_qfm_loss_weights_within_each_state():
    # Two states, two support actions each; constant field c on the OT path:
    # L = mean_b sum_m softmax_m(beta q_bm) (||c + a_bm||^2 + d).
    with jax.enable_x64(True):
        a = jnp.array([[[1.0], [-1.0]], [[2.0], [0.0]]])  # [B=2, M=2, A=1]
        q = jnp.array([[0.0, 1.0], [2.0, 0.0]])
        s = jnp.array([[0.0], [1.0]])
        reps = 50_000
        actions, qs, states = (jnp.tile(v, (reps,) + (1,) * (v.ndim - 1)) for v in (a, q, s))
        c, beta = jnp.array([0.3]), 0.7
        w = np.exp(beta * np.asarray(q)) / np.exp(beta * np.asarray(q)).sum(1, keepdims=True)
        per = (np.asarray(c) + np.asarray(a)[..., 0]) ** 2 + 1
        expect = float(np.mean(np.sum(w * per, axis=1)))
        got = ewfm.qfm_loss(const_field(c), ewfm.OTPath(), actions, qs, beta, KEY, states)
        assert abs(float(got) - expect) < 0.03, (got, expect)
        # qd_loss: field f(x) = x gives (a^2 + 1)/3 per action
        per_d = (np.asarray(a)[..., 0] ** 2 + 1) / 3
        got_d = ewfm.qd_loss(lambda x, t, c: x, ewfm.OTPath(), actions, qs, beta, KEY, states)
        assert abs(float(got_d) - float(np.mean(np.sum(w * per_d, axis=1)))) < 0.03


def test_field_sees_the_condition():
    seen = []

    def field(x, t, cond):
        seen.append(cond.shape)
        return x * 0 + cond[:1]

    a = jnp.zeros((4, 3, 1))
    states = jnp.arange(4.0)[:, None] * jnp.ones((4, 2))
    ewfm.qfm_loss(field, ewfm.OTPath(), a, jnp.zeros((4, 3)), 1.0, KEY, states)
    assert seen == [(2,)]  # called once under vmap with one state of size 2


class _NoNoise(ewfm.AbstractPath):
    """A degenerate path with x_t = x0 for every t (to make CEP's target exact)."""

    t_min: float = 0.0

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, float))

    def sigma(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def d_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def d_sigma(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def t_of_log_snr(self, lam):
        raise NotImplementedError


def test_cep_loss_exact_values():
    with jax.enable_x64(True):
        x0 = jr.normal(KEY, (5, 4, 2))
        energy = jnp.sum(x0**2, axis=-1)
        beta = 1.3
        p = jax.nn.softmax(-beta * energy, axis=1)
        # f = 0: cross-entropy of p with uniform = log M
        zero = lambda x, t, c: jnp.sum(x) * 0.0
        assert jnp.isclose(ewfm.cep_loss(zero, ewfm.OTPath(), x0, energy, beta, KEY), jnp.log(4.0))
        # x_t = x0 and f = -beta E: cross-entropy of p with itself = entropy of p (the minimum)
        exact = lambda x, t, c: -beta * jnp.sum(x**2)
        entropy = -jnp.mean(jnp.sum(p * jnp.log(p), axis=1))
        got = ewfm.cep_loss(exact, _NoNoise(), x0, energy, beta, KEY)
        assert jnp.isclose(got, entropy, rtol=1e-10)
        worse = lambda x, t, c: -2 * beta * jnp.sum(x**2)
        assert ewfm.cep_loss(worse, _NoNoise(), x0, energy, beta, KEY) > entropy


def _shape_error(param, actual, axes):
    """The run-time shape check's message (EWFM_TYPECHECK=1, set by conftest): the parameter,
    its actual shape and the named axes it should have had."""
    return rf"typechecking parameter '{param}'\.\nActual value: {actual}\nExpected type: .*'{axes}'"


def test_shape_mistakes_name_the_dimension():
    field = lambda x, t, c: x
    with pytest.raises(TypeCheckError, match=_shape_error("energy", r"f32\[5\]", "batch")):
        ewfm.efm_loss(field, ewfm.OTPath(), jnp.ones((4, 2)), jnp.ones(5), 1.0, KEY)
    with pytest.raises(TypeCheckError, match=_shape_error("q", r"f32\[4,2\]", "batch m")):
        ewfm.qfm_loss(
            field, ewfm.OTPath(), jnp.ones((4, 3, 2)), jnp.ones((4, 2)), 1.0, KEY, jnp.ones((4, 5))
        )
    with pytest.raises(TypeCheckError, match=_shape_error("states", r"f32\[3,5\]", "batch state")):
        ewfm.qfm_loss(
            field, ewfm.OTPath(), jnp.ones((4, 3, 2)), jnp.ones((4, 3)), 1.0, KEY, jnp.ones((3, 5))
        )


def test_bad_inputs():
    field = lambda x, t, c: x
    with pytest.raises(ValueError, match="beta"):
        ewfm.efm_loss(field, ewfm.OTPath(), jnp.ones((4, 2)), jnp.ones(4), -1.0, KEY)
    with pytest.raises(ValueError, match="empty"):
        ewfm.cfm_loss(field, ewfm.OTPath(), jnp.ones((0, 2)), KEY)
    with pytest.raises(Exception, match="NaN or inf"):
        ewfm.efm_loss(field, ewfm.OTPath(), jnp.ones((2, 2)), jnp.array([0.0, jnp.nan]), 1.0, KEY)
