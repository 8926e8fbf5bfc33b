"""ewfm.log_likelihood against closed-form Gaussian densities."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import ewfm


def _log_normal(x, mean, sd):
    """``log N(x; mean, sd^2 I)`` row by row (numpy, float64)."""
    x, mean = np.asarray(x, np.float64), np.asarray(mean, np.float64)
    d = x.shape[-1]
    return -0.5 * np.sum((x - mean) ** 2, axis=-1) / sd**2 - d * np.log(sd * np.sqrt(2 * np.pi))


def _gaussian_ot_velocity(m, s):
    """Exact marginal velocity of the OT path for data N(m, s^2 I).

    ``p_t = N((1 - t) m, v_t I)`` with ``v_t = (1 - t)^2 s^2 + t^2``; the flow moves the mean
    and scales deviations by ``d/dt log sqrt(v_t)``.
    """

    def field(x, t, cond=None):
        v = (1 - t) ** 2 * s**2 + t**2
        return -m + (t - (1 - t) * s**2) / v * (x - (1 - t) * m)

    return field


def test_log_likelihood_of_gaussian_flow_is_exact(x64):
    m, s = jnp.array([1.0, -0.5]), 0.6
    x = m + s * jr.normal(jr.key(0), (64, 2)) * 1.5
    ll = ewfm.log_likelihood(_gaussian_ot_velocity(m, s), ewfm.OTPath(), x, rtol=1e-9, atol=1e-9)
    ref = _log_normal(x, m, s)
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-6)


def test_log_likelihood_reads_eps_fields_and_conditions(x64):
    # The same flow given as a noise prediction (Lemma 3.2 conversion) and with an ignored
    # condition gives the same density.
    m, s = jnp.array([0.3, 0.2]), 0.8
    path = ewfm.OTPath()
    vel = _gaussian_ot_velocity(m, s)
    eps_field = lambda x, t, c=None: path.eps_from_velocity(vel(x, t), x, t)
    x = m + s * jr.normal(jr.key(1), (16, 2))
    a = ewfm.log_likelihood(vel, path, x, rtol=1e-9, atol=1e-9, t_end=0.999)
    b = ewfm.log_likelihood(
        eps_field, path, x, jnp.ones((16, 3)), prediction="eps", rtol=1e-9, atol=1e-9, t_end=0.999
    )
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)


def _gaussian_velocity(path, m, s):
    """Exact marginal velocity of any Gaussian path for data ``N(m, s^2 I)``.

    ``x_t ~ N(alpha_t m, v_t I)`` with ``v_t = alpha_t^2 s^2 + sigma_t^2``: the flow moves the
    mean with ``alpha_t'`` and scales deviations by ``d/dt log sqrt(v_t)``.
    """

    def field(x, t, cond=None):
        a, sg, da, ds = path.alpha(t), path.sigma(t), path.d_alpha(t), path.d_sigma(t)
        v = a**2 * s**2 + sg**2
        return da * m + (a * da * s**2 + sg * ds) / v * (x - a * m)

    return field


def test_log_likelihood_on_the_vp_path(x64):
    # VP: x is read at t_min (the slightly noised data) and the flow runs to t = 1, where the
    # density is taken to be N(0, I). The flow of Gaussian data is affine, so the exact answer
    # is log N(x1; 0, I) + dim * log(sd_1 / sd_tmin), with x1 the flow's image of x.
    path = ewfm.VPPath()
    m, s, dim = jnp.array([1.0, -0.5]), 0.6, 2
    a0, a1 = float(path.alpha(path.t_min)), float(path.alpha(1.0))
    sd0 = float(jnp.sqrt(a0**2 * s**2 + path.sigma(path.t_min) ** 2))
    sd1 = float(jnp.sqrt(a1**2 * s**2 + path.sigma(1.0) ** 2))
    x = a0 * m + sd0 * 1.5 * jr.normal(jr.key(2), (32, dim))
    ll = ewfm.log_likelihood(_gaussian_velocity(path, m, s), path, x, rtol=1e-10, atol=1e-10)
    x1 = a1 * np.asarray(m) + sd1 / sd0 * (np.asarray(x) - a0 * np.asarray(m))
    exact = _log_normal(x1, 0.0, 1.0) + dim * np.log(sd1 / sd0)
    np.testing.assert_allclose(ll, exact, rtol=0, atol=1e-6)
    # the true density of the noised data, up to VP's prior mismatch at t = 1 (alpha_1 = 0.007)
    true = _log_normal(x, a0 * np.asarray(m), sd0)
    np.testing.assert_allclose(ll, true, rtol=0, atol=0.05)
    assert float(np.max(np.abs(np.asarray(ll) - true))) > 1e-4  # (the mismatch is real)
