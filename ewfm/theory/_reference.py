"""Exact references: guided marginals, posteriors, velocities and scores of toy data.

Two kinds of data where every quantity of docs/method.md is exact:

- `FiniteData`: a finite data set ``{x0_i}`` with probabilities ``p_i`` and energies ``E_i``;
  every posterior is a finite sum.
- `GaussianMixture`: a mixture of Gaussians with a quadratic (or linear) energy
  ``E(x) = 1/2 x^T A x - b^T x``; tilting a Gaussian by ``exp(-beta E)`` gives a Gaussian,
  so the guided marginals and posteriors are mixtures of Gaussians in closed form.

Two routes are kept apart on purpose, so that checks compare different computations:
`log_marginal` tilts the data at ``t = 0`` and then adds noise (closed form of ``q_t``),
while `posterior_mean` takes the *unguided* posterior ``p(x0 | x_t)`` and reweights it by
``exp(-beta E(x0))`` (the formula of Theorem 4.1 / eq. 4.4). Path quantities (``alpha_t``,
``sigma_t``, conditional targets) come from the library's path object.
"""

from typing import Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._paths import AbstractPath

Scalar = Float[ArrayLike, ""]


class FiniteData(eqx.Module):
    """A finite data set: points ``x0_i``, log-probabilities ``log p_i`` and energies ``E_i``."""

    points: Float[Array, "n dim"]
    log_p: Float[Array, " n"]
    energy: Float[Array, " n"]


class GaussianMixture(eqx.Module):
    """``sum_k w_k N(m_k, S_k)`` with energy ``E(x) = 1/2 x^T A x - b^T x`` (up to a constant).

    A single Gaussian is the case ``k = 1``. Build it with `gaussian_data`.
    """

    log_w: Float[Array, " k"]
    means: Float[Array, "k dim"]
    covs: Float[Array, "k dim dim"]
    A: Float[Array, "dim dim"]
    b: Float[Array, " dim"]


Data = Union[FiniteData, GaussianMixture]  # noqa: UP007 (a runtime alias)


def gaussian_data(
    means: Float[ArrayLike, "k dim"],
    covs: Float[ArrayLike, "k dim dim"],
    *,
    weights: Float[ArrayLike, " k"] | None = None,
    A: Float[ArrayLike, "dim dim"] | None = None,
    c: Float[ArrayLike, " dim"] | None = None,
    g: Float[ArrayLike, " dim"] | None = None,
) -> GaussianMixture:
    """A Gaussian mixture with quadratic energy ``1/2 (x-c)^T A (x-c)`` or linear ``g^T x``."""
    # numpy for the set-up: no XLA compilation for a handful of tiny operations
    means_ = np.asarray(means, dtype=np.float64)
    covs_ = np.asarray(covs, dtype=np.float64)
    k, d = means_.shape
    w = np.ones(k) / k if weights is None else np.asarray(weights, dtype=np.float64)
    if g is not None:
        A_ = np.zeros((d, d))
        b = -np.asarray(g, dtype=np.float64)
    else:
        A_ = np.asarray(A, dtype=np.float64)
        b = A_ @ np.asarray(c, dtype=np.float64)
    # device_put: jnp.asarray would compile a small program per shape
    leaves = (np.log(w / np.sum(w)), means_, covs_, A_, b)
    return GaussianMixture(*(jax.device_put(v) for v in leaves))


def _inv(M: Array) -> Array:
    """Matrix inverse; explicit for 1x1 and 2x2 (XLA compiles it in a fraction of the time)."""
    if M.shape == (1, 1):
        return 1.0 / M
    if M.shape == (2, 2):
        det = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
        adj = jnp.stack([jnp.stack([M[1, 1], -M[0, 1]]), jnp.stack([-M[1, 0], M[0, 0]])])
        return adj / det
    return jnp.linalg.inv(M)


def _logdet(M: Array) -> Array:
    """``log det M`` of a matrix with positive determinant; explicit for 1x1 and 2x2."""
    if M.shape == (1, 1):
        return jnp.log(M[0, 0])
    if M.shape == (2, 2):
        return jnp.log(M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0])
    return jnp.linalg.slogdet(M)[1]


def tilt_gaussian(
    mean: Float[Array, " dim"],
    cov: Float[Array, "dim dim"],
    A: Float[Array, "dim dim"],
    b: Float[Array, " dim"],
    beta: Scalar,
) -> tuple[Float[Array, " dim"], Float[Array, "dim dim"], Float[Array, ""]]:
    """Tilt ``N(mean, cov)`` by ``exp(-beta (1/2 x^T A x - b^T x))`` (``A`` positive semi-definite).

    Returns the tilted mean, covariance and ``log E_{N(mean, cov)}[exp(-beta E)]``. With
    ``g = beta (A mean - b)`` and ``M = I + beta cov A``: ``cov' = M^{-1} cov``,
    ``mean' = mean - cov' g`` and ``log E[exp(-beta E)] = -beta E(mean) - 1/2 log det M +
    1/2 g^T cov' g``. No inverse of ``cov``: exact also for a (nearly) singular ``cov``, such
    as a posterior at small ``t``.
    """
    d = mean.shape[0]
    energy = 0.5 * mean @ A @ mean - b @ mean
    g = beta * (A @ mean - b)
    M = jnp.eye(d) + beta * cov @ A
    cov_t = _inv(M) @ cov
    cov_t = 0.5 * (cov_t + cov_t.T)
    shift = cov_t @ g
    log_z = -(beta * energy) - 0.5 * _logdet(M) + 0.5 * g @ shift
    return mean - shift, cov_t, jnp.asarray(log_z)


def _log_normal(x: Array, mean: Array, cov: Array) -> Array:
    d = x.shape[0]
    r = x - mean
    return -0.5 * r @ _inv(cov) @ r - 0.5 * _logdet(cov) - 0.5 * d * jnp.log(2 * jnp.pi)


def _log_iso_normal(x: Array, mean: Array, sigma: Array) -> Array:
    d = x.shape[0]
    return (
        -0.5 * jnp.sum((x - mean) ** 2) / sigma**2
        - d * jnp.log(sigma)
        - 0.5 * d * jnp.log(2 * jnp.pi)
    )


def tilted_gaussians(
    data: GaussianMixture, beta: Scalar
) -> tuple[Float[Array, " k"], Float[Array, "k dim"], Float[Array, "k dim dim"]]:
    """The target ``pi ∝ p exp(-beta E)`` as a mixture: log-weights, means, covariances."""
    m, S, log_z = jax.vmap(lambda mk, Sk: tilt_gaussian(mk, Sk, data.A, data.b, beta))(
        data.means, data.covs
    )
    log_w = data.log_w + log_z
    return log_w - jax.nn.logsumexp(log_w), m, S


@jax.jit
def log_marginal(
    data: Data, path: AbstractPath, x: Float[Array, " dim"], t: Scalar, beta: Scalar
) -> Float[Array, ""]:
    """``log q_t(x)`` of the guided marginal (``beta = 0``: the data marginal ``log p_t``).

    Closed form: tilt the data at ``t = 0``, then add the path's noise.
    """
    a, s = path.alpha(t), path.sigma(t)
    if isinstance(data, FiniteData):
        logits = data.log_p - beta * data.energy
        logits = logits - jax.nn.logsumexp(logits)
        comp = jax.vmap(lambda xi: _log_iso_normal(x, a * xi, s))(data.points)
        return jax.nn.logsumexp(logits + comp)
    log_w, m, S = tilted_gaussians(data, beta)
    eye = jnp.eye(x.shape[0])
    comp = jax.vmap(lambda mk, Sk: _log_normal(x, a * mk, a**2 * Sk + s**2 * eye))(m, S)
    return jax.nn.logsumexp(log_w + comp)


def posterior_logits(
    data: FiniteData, path: AbstractPath, x: Float[Array, " dim"], t: Scalar, beta: Scalar
) -> Float[Array, " n"]:
    """Log of the guided posterior ``q(x0_i | x_t) ∝ p_i exp(-beta E_i) q_t(x_t | x0_i)``."""
    a, s = path.alpha(t), path.sigma(t)
    sq = jnp.sum((x[None, :] - a * data.points) ** 2, axis=1)
    return data.log_p - beta * data.energy - 0.5 * sq / s**2


@jax.jit
def intermediate_energy(
    data: FiniteData, path: AbstractPath, x: Float[Array, " dim"], t: Scalar, beta: Scalar
) -> Float[Array, ""]:
    """``E_t(x) = -log E_{p(x0|x_t)}[exp(-beta E(x0))]`` [3.6], as a finite sum."""
    lg = posterior_logits(data, path, x, t, beta)
    l0 = posterior_logits(data, path, x, t, 0.0)
    return -(jax.nn.logsumexp(lg) - jax.nn.logsumexp(l0))


@jax.jit
def posterior_mean(
    data: Data, path: AbstractPath, x: Float[Array, " dim"], t: Scalar, beta: Scalar
) -> Float[Array, " dim"]:
    """Mean of the guided posterior ``q(x0 | x_t)`` (``beta = 0``: the unguided one).

    Computed as in Theorem 4.1: the unguided posterior ``p(x0 | x_t)`` reweighted by
    ``exp(-beta E(x0)) / exp(-E_t(x_t))``.
    """
    a, s = path.alpha(t), path.sigma(t)
    if isinstance(data, FiniteData):
        w = jax.nn.softmax(posterior_logits(data, path, x, t, beta))
        return w @ data.points
    d = x.shape[0]
    eye = jnp.eye(d)

    def component(log_w, m, S):
        cov_t = a**2 * S + s**2 * eye
        log_r = log_w + _log_normal(x, a * m, cov_t)
        prec = _inv(cov_t)
        mu = m + a * S @ prec @ (x - a * m)
        C = s**2 * S @ prec  # (S^-1 + a^2/s^2 I)^-1: S and cov_t commute
        mu_t, _, log_z = tilt_gaussian(mu, 0.5 * (C + C.T), data.A, data.b, beta)
        return log_r + log_z, mu_t

    log_r, mu = jax.vmap(component)(data.log_w, data.means, data.covs)
    return jax.nn.softmax(log_r) @ mu


def guided_velocity(
    data: Data, path: AbstractPath, x: Float[Array, " dim"], t: Scalar, beta: Scalar
) -> Float[Array, " dim"]:
    """``u^beta_t(x)`` [Theorem 4.1]: the conditional velocity averaged over the guided posterior.

    ``u_t(x | x0)`` is affine in ``x0`` (with ``eps = (x - alpha_t x0) / sigma_t``), so its
    posterior average is the library's conditional velocity (`AbstractPath.sample`) at the
    posterior mean.
    """
    m = posterior_mean(data, path, x, t, beta)
    eps = (x - path.alpha(t) * m) / path.sigma(t)
    return path.sample(m, eps, t).velocity


def guided_score(
    data: Data, path: AbstractPath, x: Float[Array, " dim"], t: Scalar, beta: Scalar
) -> Float[Array, " dim"]:
    """``grad log q_t(x)`` by eq. 4.4: the conditional score ``-eps / sigma_t`` averaged over
    the guided posterior (via the library's `AbstractPath.score_from_eps`)."""
    m = posterior_mean(data, path, x, t, beta)
    eps = (x - path.alpha(t) * m) / path.sigma(t)
    return path.score_from_eps(eps, t)


def gaussian_marginal(
    mean: Float[Array, " dim"], cov: Float[Array, "dim dim"], path: AbstractPath, t: Scalar
) -> tuple[Float[Array, " dim"], Float[Array, "dim dim"]]:
    """Mean and covariance of ``x_t`` when ``x0 ~ N(mean, cov)``."""
    a, s = path.alpha(t), path.sigma(t)
    return a * mean, a**2 * cov + s**2 * jnp.eye(mean.shape[0])
