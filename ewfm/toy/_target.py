"""The exact guided target of a finite data set, and the sample distance used to score models.

A finite data set ``{x_i}`` with uniform weights has the guided target
``pi_i = exp(-beta E_i) / sum_j exp(-beta E_j)`` exactly (docs/method.md, section 12): exact
samples of ``pi`` are data points drawn with these probabilities.

Distance: the sliced Wasserstein-2 distance. It is a metric on distributions with the units
of ``x``, it sees both where the mass is and how much of it sits in each mode (what guidance
changes), it needs no kernel bandwidth (unlike MMD), and between empirical measures it is
exact: each 1D Wasserstein-2 distance is an integral of sorted-quantile differences, so the
cost is ``O(K n log n)``. In 2D the K directions are evenly spaced angles (a deterministic
quadrature of the circle), so two calls on the same sets agree exactly.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._weights import check_beta


def target_probabilities(
    energy: Float[Array, " n"], beta: Float[ArrayLike, ""]
) -> Float[Array, " n"]:
    """Exact probabilities ``pi_i ∝ exp(-beta E_i)`` of the guided target on the data points."""
    return jax.nn.softmax(-check_beta(beta) * energy)


def target_mean_energy(energy: Float[Array, " n"], beta: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """The exact mean energy ``E_pi[E] = sum_i pi_i E_i`` under the guided target."""
    return jnp.sum(target_probabilities(energy, beta) * energy)


def sample_target(
    x: Float[Array, "n dim"],
    energy: Float[Array, " n"],
    beta: Float[ArrayLike, ""],
    key: PRNGKeyArray,
    size: int,
) -> Float[Array, "size dim"]:
    """Exact samples of the guided target: ``size`` data points drawn i.i.d. from ``pi``.

    Inverse-CDF draws (``jr.choice`` with probabilities: a cumulative sum and a binary
    search), ``O(n + size log n)``; ``jr.categorical`` would draw ``size x n`` Gumbels.
    """
    p = target_probabilities(energy, beta)
    return x[jr.choice(key, energy.shape[0], (size,), p=p)]


def _w2_1d(u: Array, v: Array) -> Array:
    """Squared Wasserstein-2 distance between two empirical measures on the line (exact)."""
    n, m = u.shape[0], v.shape[0]
    us, vs = jnp.sort(u), jnp.sort(v)
    if n == m:  # equal sizes: the optimal plan matches the i-th smallest points
        return jnp.mean((us - vs) ** 2)
    levels = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1) / n, jnp.arange(1, m + 1) / m]))
    du = jnp.diff(levels, prepend=0.0)
    mid = levels - du / 2
    iu = jnp.clip(jnp.floor(mid * n).astype(int), 0, n - 1)
    iv = jnp.clip(jnp.floor(mid * m).astype(int), 0, m - 1)
    return jnp.sum(du * (us[iu] - vs[iv]) ** 2)


def sliced_wasserstein(
    x: Float[Array, "n dim"],
    y: Float[Array, "m dim"],
    *,
    n_projections: int = 256,
    key: PRNGKeyArray | None = None,
) -> Float[Array, ""]:
    """Sliced Wasserstein-2 distance ``sqrt(E_theta W2^2(theta·x, theta·y))``.

    Directions: evenly spaced angles when ``dim == 2`` and no ``key`` is given, otherwise
    ``n_projections`` random unit vectors drawn from ``key``. Set sizes may differ.
    """
    dim = x.shape[1]
    if y.shape[1] != dim:
        raise ValueError(f"x and y need the same dimension, got {dim} and {y.shape[1]}.")
    if key is None and dim != 2:
        raise ValueError(f"pass a key for random directions when dim != 2 (dim = {dim}).")
    return _sliced_w2(x, y, n_projections, key)


@eqx.filter_jit
def _sliced_w2(x: Array, y: Array, n_projections: int, key: PRNGKeyArray | None) -> Array:
    if key is None:
        angle = jnp.pi * jnp.arange(n_projections) / n_projections
        dirs = jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    else:
        dirs = jr.normal(key, (n_projections, x.shape[1]))
        dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    w2 = jax.vmap(lambda d: _w2_1d(x @ d, y @ d))(dirs.astype(x.dtype))
    return jnp.sqrt(jnp.mean(w2))
