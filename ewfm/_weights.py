"""Energy weights: the per-sample weight ``B * softmax(-beta E)`` of energy-weighted losses.

``Z = E_p[exp(-beta E)]`` in eq. (4.3) is estimated by the batch mean (docs/method.md, "The
weights in practice"), so the weight of sample i in a batch of B is
``exp(-beta E_i) / mean_j exp(-beta E_j)``.
It is computed with log-sum-exp: ``exp(-beta E)`` is never formed.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def check_beta(beta: Float[ArrayLike, ""], name: str = "beta") -> Float[Array, ""]:
    """Return ``beta`` as an array, refusing negative or non-finite values.

    A Python number is checked at once (`ValueError`); a traced value is checked at run time
    with `equinox.error_if`.
    """
    if isinstance(beta, (int, float)):
        if not (beta >= 0.0 and beta < float("inf")):
            raise ValueError(f"{name} must be a finite number >= 0, got {beta}.")
        return jnp.asarray(beta, dtype=float)
    beta = jnp.asarray(beta)
    if beta.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got an array of shape {beta.shape}.")
    return eqx.error_if(
        beta, ~(jnp.isfinite(beta) & (beta >= 0)), f"{name} must be a finite number >= 0."
    )


def _check_energy(energy: Array, name: str) -> Array:
    if energy.size == 0:
        raise ValueError(f"{name} is empty (shape {energy.shape}): a batch needs >= 1 sample.")
    return eqx.error_if(
        energy,
        ~jnp.all(jnp.isfinite(energy)),
        f"{name} contains NaN or inf: energies must be finite (check the energy / Q function).",
    )


def energy_weights(
    energy: Float[Array, " batch"], beta: Float[ArrayLike, ""]
) -> Float[Array, " batch"]:
    """Batch-normalised energy weights ``B * softmax(-beta * energy)``.

    They sum to ``B``, are invariant to adding a constant to ``energy``, are all ones at
    ``beta = 0``, and stay finite for ``beta * energy`` of any finite size.
    """
    energy = _check_energy(jnp.asarray(energy), "energy")
    beta = check_beta(beta)
    return energy.shape[0] * jax.nn.softmax(-beta * energy, axis=0)


def grouped_energy_weights(
    energy: Float[Array, "batch group"], beta: Float[ArrayLike, ""]
) -> Float[Array, "batch group"]:
    """Energy weights normalised within each row: ``M * softmax_j(-beta * energy[i, j])``.

    For support sets: row i holds the energies of the M candidate actions of state i, so each
    row sums to ``M`` (the Q-weights of QIPO are ``grouped_energy_weights(-Q, beta)``).
    """
    energy = _check_energy(jnp.asarray(energy), "energy")
    beta = check_beta(beta)
    return energy.shape[1] * jax.nn.softmax(-beta * energy, axis=1)
