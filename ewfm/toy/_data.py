"""The QGPO 2D toy suite: six data sets, each with an energy ``E(x) >= 0`` (mostly in [0, 1]).

The point clouds follow FFJORD / QGPO (Lu et al. 2023, ``inf_train_gen``), re-implemented in
JAX and drawn from a PRNG key. The energies are "lower is preferred", so the guided target is
``pi ∝ p exp(-beta E)``: 8gaussians keeps QGPO's energy per mode; the others use a smooth
function of position (QGPO's step functions of labels are replaced by smooth ones so every
energy is a plain vectorised function of ``x``). `ENERGIES` describes each in words.
"""

from collections.abc import Callable

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._experiment import ConfigError
from ._config import check_dataset

ENERGIES: dict[str, str] = {
    "8gaussians": "k/7 for the mode k = 0..7 nearest to x, counted anticlockwise from the top "
    "(QGPO's energy per mode)",
    "swissroll": "|x|^2 / 9 (QGPO): the inner turns are preferred",
    "rings": "((|x| - 1.5) / 1.5)^2: the two middle rings are preferred, the outer one least",
    "moons": "clip((x_1 + 3) / 6, 0, 1): a linear tilt, the left (upper) moon is preferred",
    "checkerboard": "|x|^2 / 32: the central squares are preferred, the corners least",
    "2spirals": "clip(1 - 0.3 |x|, 0, 1): the outer ends of the arms are preferred (QGPO's "
    "1 - n/10 along the arm, written as a function of the radius)",
}


def _eight_gaussians(key: PRNGKeyArray, n: int) -> Array:
    ki, kn = jr.split(key)
    idx = jr.randint(ki, (n,), 0, 8)
    angle = jnp.pi / 2 + idx * (jnp.pi / 4)
    centres = 4.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return (centres + 0.5 * jr.normal(kn, (n, 2))) / 1.414


def _swissroll(key: PRNGKeyArray, n: int) -> Array:
    kt, kn = jr.split(key)
    t = 1.5 * jnp.pi * (1.0 + 2.0 * jr.uniform(kt, (n,)))
    x = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1)
    return (x + jr.normal(kn, (n, 2))) / 5.0


def _rings(key: PRNGKeyArray, n: int) -> Array:
    kr, ka, kn = jr.split(key, 3)
    radius = 3.0 * (jr.randint(kr, (n,), 1, 5) / 4.0)
    angle = 2 * jnp.pi * jr.uniform(ka, (n,))
    x = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return x + 0.08 * jr.normal(kn, (n, 2))


def _moons(key: PRNGKeyArray, n: int) -> Array:
    kl, ka, kn = jr.split(key, 3)
    upper = jr.bernoulli(kl, 0.5, (n,))[:, None]
    theta = jnp.pi * jr.uniform(ka, (n,))
    outer = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    inner = jnp.stack([1 - jnp.cos(theta), 0.5 - jnp.sin(theta)], axis=-1)
    x = jnp.where(upper, outer, inner) + 0.1 * jr.normal(kn, (n, 2))
    return 2.0 * x + jnp.array([-1.0, -0.2])


def _checkerboard(key: PRNGKeyArray, n: int) -> Array:
    k1, k2, k3 = jr.split(key, 3)
    x1 = 4.0 * jr.uniform(k1, (n,)) - 2.0
    x2 = jr.uniform(k2, (n,)) - 2.0 * jr.randint(k3, (n,), 0, 2) + jnp.floor(x1) % 2
    return 2.0 * jnp.stack([x1, x2], axis=-1)


def _two_spirals(key: PRNGKeyArray, n: int) -> Array:
    ks, kt, ku, kn = jr.split(key, 4)
    t = jnp.sqrt(jr.uniform(kt, (n,))) * 3.0 * jnp.pi
    u = 0.5 * jr.uniform(ku, (n, 2))
    arm = jnp.stack([-jnp.cos(t) * t, jnp.sin(t) * t], axis=-1) + u
    sign = jnp.where(jr.bernoulli(ks, 0.5, (n,)), 1.0, -1.0)[:, None]
    return sign * arm / 3.0 + 0.1 * jr.normal(kn, (n, 2))


_SAMPLERS: dict[str, Callable[[PRNGKeyArray, int], Array]] = {
    "8gaussians": _eight_gaussians,
    "swissroll": _swissroll,
    "rings": _rings,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
}


def _energy_8gaussians(x: Array) -> Array:
    angle = jnp.arctan2(x[:, 1], x[:, 0]) - jnp.pi / 2
    mode = jnp.round(angle / (jnp.pi / 4)) % 8
    return mode / 7.0


def _radius(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(x**2, axis=-1))


_ENERGY_FNS: dict[str, Callable[[Array], Array]] = {
    "8gaussians": _energy_8gaussians,
    "swissroll": lambda x: jnp.sum(x**2, axis=-1) / 9.0,
    "rings": lambda x: ((_radius(x) - 1.5) / 1.5) ** 2,
    "moons": lambda x: jnp.clip((x[:, 0] + 3.0) / 6.0, 0.0, 1.0),
    "checkerboard": lambda x: jnp.sum(x**2, axis=-1) / 32.0,
    "2spirals": lambda x: jnp.clip(1.0 - 0.3 * _radius(x), 0.0, 1.0),
}


def dataset(name: str, n: int, key: PRNGKeyArray) -> Float[Array, "n 2"]:
    """Draw ``n`` points of the toy data set ``name`` (one of `DATASETS`)."""
    check_dataset(name)
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}.")
    return _SAMPLERS[name](key, n)


def energy(name: str) -> Callable[[Float[Array, "n 2"]], Float[Array, " n"]]:
    """The energy of data set ``name`` as a vectorised function ``E(x [n, 2]) -> [n]``."""
    check_dataset(name)
    fn = _ENERGY_FNS[name]

    def energy_fn(x: Float[Array, "n 2"]) -> Float[Array, " n"]:
        return fn(x)

    energy_fn.__doc__ = f"Energy of {name}: {ENERGIES[name]}."
    return energy_fn
