"""ewfm.log_likelihood against closed-form Gaussian densities."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from scipy.stats import multivariate_normal

import ewfm


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
    ref = multivariate_normal(mean=np.asarray(m), cov=s**2 * np.eye(2)).logpdf(np.asarray(x))
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-6)


def test_log_likelihood_reads_eps_fields_and_conditions(x64):
    # The same flow given as a noise prediction (Lemma 3.2 conversion) and with an ignored
    # condition gives the same density.
    m, s = jnp.array([0.3, 0.2]), 0.8
    path = ewfm.OTPath()
    vel = _gaussian_ot_velocity(m, s)
    eps_field = lambda x, t, c=None: path.eps_from_velocity(vel(x, t), x, t)
    x = m + s * jr.normal(jr.key(1), (16, 2))
    kw = dict(rtol=1e-9, atol=1e-9, t_end=0.999)
    a = ewfm.log_likelihood(vel, path, x, **kw)
    b = ewfm.log_likelihood(eps_field, path, x, jnp.ones((16, 3)), prediction="eps", **kw)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)
