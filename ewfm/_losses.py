"""Training losses: plain, energy-weighted and Q-weighted flow matching and denoising, and CEP.

Every loss takes a *field* -- any callable ``field(x_t, t, cond) -> output`` acting on ONE
sample (``x_t: [dim]``, ``t: []``, ``cond: [cond_dim]`` or ``None``); the losses `vmap` it over
the batch, so equinox modules and plain JAX functions both work -- then a path, the data, the
energies or Q-values, ``beta`` and a PRNG key, and returns a scalar. Times are drawn
uniformly on ``[path.t_min, 1]``; ``||.||^2`` is summed over the sample's dimensions and
averaged over the batch. Equation numbers are the paper's, as in docs/method.md.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._paths import AbstractPath, PathSample
from ._weights import energy_weights, grouped_energy_weights

Field = Callable[..., Any]
"""A callable ``(x_t [dim], t [], cond [cond_dim] | None) -> [dim]`` (one sample)."""


def apply_field(
    field: Field,
    x: Float[Array, "batch dim"],
    t: Float[Array, " batch"],
    cond: Float[Array, "batch cond"] | None = None,
) -> Float[Array, "batch dim"]:
    """Evaluate a one-sample field on a batch (``vmap`` over the leading axis)."""
    if cond is None:
        return jax.vmap(lambda xi, ti: field(xi, ti, None))(x, t)
    return jax.vmap(field)(x, t, cond)


def _check_batch(x0: Array, name: str = "x0") -> None:
    if x0.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {x0.shape}): a batch needs >= 1 sample.")


def _noisy(path: AbstractPath, x0: Array, key: PRNGKeyArray) -> tuple[Array, PathSample]:
    kt, ke = jr.split(key)
    t = jr.uniform(kt, x0.shape[:1], minval=path.t_min, maxval=1.0, dtype=x0.dtype)
    eps = jr.normal(ke, x0.shape, dtype=x0.dtype)
    return t, jax.vmap(path.sample)(x0, eps, t)


def _weighted_regression(
    field: Field,
    path: AbstractPath,
    x0: Array,
    weights: Array | None,
    key: PRNGKeyArray,
    cond: Array | None,
    target: str,
) -> Array:
    _check_batch(x0)
    t, ps = _noisy(path, x0, key)
    pred = apply_field(field, ps.x_t, t, cond)
    goal = ps.velocity if target == "velocity" else ps.eps
    err = jnp.sum((pred - goal) ** 2, axis=tuple(range(1, x0.ndim)))
    if weights is not None:
        err = weights * err
    return jnp.mean(err)


def cfm_loss(
    field: Field,
    path: AbstractPath,
    x0: Float[Array, "batch dim"],
    key: PRNGKeyArray,
    *,
    cond: Float[Array, "batch cond"] | None = None,
) -> Float[Array, ""]:
    """Conditional flow matching: ``E ||v(x_t, t) - u_t(x_t | x0)||^2``."""
    return _weighted_regression(field, path, x0, None, key, cond, "velocity")


def efm_loss(
    field: Field,
    path: AbstractPath,
    x0: Float[Array, "batch dim"],
    energy: Float[Array, " batch"],
    beta: Float[ArrayLike, ""],
    key: PRNGKeyArray,
    *,
    cond: Float[Array, "batch cond"] | None = None,
) -> Float[Array, ""]:
    """Energy-weighted flow matching ``L_CEFM`` (eq. (4.3) in docs/method.md).

    CFM with per-sample weights ``B * softmax(-beta E(x0))``; its minimiser is the
    energy-guided velocity ``u^beta_t`` of Theorem 4.1, which generates
    ``pi ∝ p exp(-beta E)``.
    """
    return _weighted_regression(
        field, path, x0, energy_weights(energy, beta), key, cond, "velocity"
    )


def denoising_loss(
    field: Field,
    path: AbstractPath,
    x0: Float[Array, "batch dim"],
    key: PRNGKeyArray,
    *,
    cond: Float[Array, "batch cond"] | None = None,
) -> Float[Array, ""]:
    """Denoising score matching in noise-prediction form: ``E ||eps(x_t, t) - eps||^2``.

    Equal to ``sigma_t^2 ||s(x_t, t) - grad log q_t(x_t | x0)||^2`` with ``s = -eps / sigma_t``.
    """
    return _weighted_regression(field, path, x0, None, key, cond, "eps")


def ed_loss(
    field: Field,
    path: AbstractPath,
    x0: Float[Array, "batch dim"],
    energy: Float[Array, " batch"],
    beta: Float[ArrayLike, ""],
    key: PRNGKeyArray,
    *,
    cond: Float[Array, "batch cond"] | None = None,
) -> Float[Array, ""]:
    """Energy-weighted diffusion ``L_CED`` (Corollary 4.8, Algorithm 1), noise-prediction form.

    See docs/method.md, section 6, for why the ``sigma_t^2``-weighted noise error has the
    same minimiser.

    Its minimiser is the guided score (4.4) of ``pi ∝ p exp(-beta E)``.
    """
    return _weighted_regression(field, path, x0, energy_weights(energy, beta), key, cond, "eps")


def _support_loss(field, path, actions, q, beta, key, states, target):
    b, m = actions.shape[:2]
    if b == 0 or m == 0:
        raise ValueError(f"actions is empty (shape {actions.shape}): need >= 1 state and action.")
    w = grouped_energy_weights(-q, beta).reshape(b * m)
    flat = actions.reshape(b * m, *actions.shape[2:])
    cond = jnp.repeat(states, m, axis=0)
    return _weighted_regression(field, path, flat, w, key, cond, target)


def qfm_loss(
    field: Field,
    path: AbstractPath,
    actions: Float[Array, "batch m action"],
    q: Float[Array, "batch m"],
    beta: Float[ArrayLike, ""],
    key: PRNGKeyArray,
    states: Float[Array, "batch state"],
) -> Float[Array, ""]:
    """Q-weighted flow matching ``L_QFM`` (eq. (5.3) in docs/method.md) over support sets.

    Row i of ``actions`` holds M support actions of state ``states[i]``; each is weighted by
    ``M * softmax_j(beta Q(s_i, a_ij))`` over its own row.
    """
    return _support_loss(field, path, actions, q, beta, key, states, "velocity")


def qd_loss(
    field: Field,
    path: AbstractPath,
    actions: Float[Array, "batch m action"],
    q: Float[Array, "batch m"],
    beta: Float[ArrayLike, ""],
    key: PRNGKeyArray,
    states: Float[Array, "batch state"],
) -> Float[Array, ""]:
    """Q-weighted diffusion ``L_QD`` (eq. (5.2) in docs/method.md), noise form, on support sets."""
    return _support_loss(field, path, actions, q, beta, key, states, "eps")


def cep_loss(
    energy_net: Callable[..., Any],
    path: AbstractPath,
    x0: Float[Array, "batch m dim"],
    energy: Float[Array, "batch m"],
    beta: Float[ArrayLike, ""],
    key: PRNGKeyArray,
    *,
    cond: Float[Array, "batch cond"] | None = None,
) -> Float[Array, ""]:
    """Contrastive energy prediction (QGPO, Lu et al. 2023; docs/method.md, section 8).

    ``energy_net(x_t, t, cond) -> []`` learns ``f ≈ -E_t`` (the intermediate energy, up to a
    constant) from K = M samples per context sharing one time ``t``:
    ``-E_t sum_i softmax_i(-beta E(x0_i)) log softmax_i(f(x_t_i, t))``. Sampling then adds
    ``w grad_x f`` to the score.
    """
    b, m = x0.shape[:2]
    if b == 0 or m == 0:
        raise ValueError(f"x0 is empty (shape {x0.shape}): need >= 1 group and sample.")
    target = grouped_energy_weights(energy, beta) / m  # softmax_i(-beta E_i) per group
    kt, ke = jr.split(key)
    t = jr.uniform(kt, (b,), minval=path.t_min, maxval=1.0, dtype=x0.dtype)
    eps = jr.normal(ke, x0.shape, dtype=x0.dtype)
    tt = jnp.broadcast_to(t[:, None], (b, m))
    x_t = jax.vmap(jax.vmap(lambda x, e, ti: path.sample(x, e, ti).x_t))(x0, eps, tt)

    def row(xr, tr, c):
        return jax.vmap(lambda xi, ti: energy_net(xi, ti, c))(xr, tr)

    if cond is None:
        f = jax.vmap(lambda xr, tr: row(xr, tr, None))(x_t, tt)
    else:
        f = jax.vmap(row)(x_t, tt, cond)
    return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(f, axis=1), axis=1))
