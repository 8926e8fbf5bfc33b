"""Closed forms shared by the core tests: Gaussian data pushed along a Gaussian path."""

import jax.numpy as jnp


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
