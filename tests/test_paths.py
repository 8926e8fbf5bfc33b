import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from helpers import gaussian_fields

import ewfm

PATHS = [ewfm.OTPath(), ewfm.OTPath(sigma_min=0.01), ewfm.VPPath(), ewfm.VPPath(b0=0.2, b1=10.0)]
TS = jnp.linspace(0.02, 0.98, 25)


@pytest.fixture(autouse=True)
def _x64(x64):
    yield


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_derivatives_match_autodiff(path):
    ts = jnp.asarray(TS, jnp.float64)
    assert jnp.allclose(jax.vmap(path.d_alpha)(ts), jax.vmap(jax.grad(path.alpha))(ts), atol=1e-12)
    assert jnp.allclose(jax.vmap(path.d_sigma)(ts), jax.vmap(jax.grad(path.sigma))(ts), atol=1e-10)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_boundary_values(path):
    # t = 0 is data (alpha = 1, sigma = sigma_min or 0), t = 1 is (close to) pure noise
    assert jnp.isclose(path.alpha(0.0), 1.0)
    if isinstance(path, ewfm.OTPath):
        assert path.alpha(1.0) == 0.0 and jnp.isclose(path.sigma(1.0), 1.0)
    else:  # variance preserving; alpha_1 = exp(-(b1 - b0)/4 - b0/2)
        assert jnp.isclose(path.alpha(1.0), jnp.exp(-(path.b1 - path.b0) / 4 - path.b0 / 2))
        assert jnp.allclose(path.alpha(TS) ** 2 + path.sigma(TS) ** 2, 1.0, atol=1e-12)


def test_vp_schedule_is_qgpo_linear_beta():
    # d log alpha / dt = -beta(t) / 2 with beta(t) = b0 + t (b1 - b0)
    path = ewfm.VPPath()
    dlog = jax.vmap(jax.grad(lambda t: jnp.log(path.alpha(t))))(jnp.asarray(TS, jnp.float64))
    assert jnp.allclose(dlog, -(0.1 + TS * 19.9) / 2, atol=1e-12)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_sample_targets_match_definitions(path):
    k1, k2 = jr.split(jr.PRNGKey(0))
    x0, eps = jr.normal(k1, (3,), jnp.float64), jr.normal(k2, (3,), jnp.float64)
    t = 0.37
    ps = path.sample(x0, eps, t)
    assert jnp.allclose(ps.x_t, path.alpha(t) * x0 + path.sigma(t) * eps)
    # the conditional velocity is the time derivative of x_t along the path
    dx = jax.jacfwd(lambda s: path.sample(x0, eps, s).x_t)(t)
    assert jnp.allclose(ps.velocity, dx, atol=1e-12)
    assert jnp.allclose(ps.eps, eps)
    if path == ewfm.OTPath():
        assert jnp.allclose(ps.velocity, eps - x0)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_lemma_3_2_conversions_exact_on_gaussian(path):
    m, s = jnp.array([0.5, -1.0]), jnp.array([0.3, 2.0])
    velocity, score, eps, _ = gaussian_fields(path, m, s)
    x = jr.normal(jr.PRNGKey(1), (2,), jnp.float64) * 2
    for t in [0.05, 0.3, 0.7, 0.95]:
        v, sc, e = velocity(x, t), score(x, t), eps(x, t)
        assert jnp.allclose(path.velocity_from_score(sc, x, t), v, rtol=1e-10, atol=1e-12)
        assert jnp.allclose(path.score_from_velocity(v, x, t), sc, rtol=1e-10, atol=1e-12)
        assert jnp.allclose(path.velocity_from_eps(e, x, t), v, rtol=1e-10, atol=1e-12)
        assert jnp.allclose(path.eps_from_velocity(v, x, t), e, rtol=1e-10, atol=1e-12)
        assert jnp.allclose(path.score_from_eps(e, t), sc, rtol=1e-12)
        assert jnp.allclose(path.eps_from_score(sc, t), e, rtol=1e-12)


def test_point_mass_velocity_is_x_over_t():
    # the check by hand after Lemma 3.2 (docs/method.md): OT path, data a point mass at 0
    # => v = x / t
    path = ewfm.OTPath()
    x, t = jnp.array([0.3, -2.0]), 0.4
    score = -x / path.sigma(t) ** 2  # p_t = N(0, t^2)
    assert jnp.allclose(path.velocity_from_score(score, x, t), x / t)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_log_snr_inverse(path):
    ts = jnp.linspace(0.05, 0.95, 10, dtype=jnp.float64)
    assert jnp.allclose(jax.vmap(path.t_of_log_snr)(jax.vmap(path.log_snr)(ts)), ts, atol=1e-9)
    assert jnp.allclose(path.log_snr(ts), jnp.log(path.alpha(ts) / path.sigma(ts)))


def test_bad_path_parameters():
    with pytest.raises(ValueError, match="sigma_min"):
        ewfm.OTPath(sigma_min=1.5)
    with pytest.raises(ValueError, match="b0"):
        ewfm.VPPath(b0=5.0, b1=1.0)
