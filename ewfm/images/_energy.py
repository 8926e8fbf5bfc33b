"""The colour energy: how far an image's mean hue lies from a target hue.

Definition (per image ``x`` of shape ``[H, W, 3]``, RGB in ``[0, 1]``):

1. Every pixel ``p`` gets its HSV hue ``h_p`` (degrees, the standard hexcone formula) and its
   chroma ``c_p = max(r, g, b) - min(r, g, b)`` (HSV saturation times value).
2. The image's mean hue is the chroma-weighted circular mean
   ``m = (1 / HW) sum_p c_p (cos h_p, sin h_p)``, ``hue(x) = atan2(m_2, m_1)``: grey,
   white and black pixels (``c_p = 0``) do not count, strongly coloured pixels count most.
   (Chroma rather than saturation, because the saturation of near-black pixels is noise.)
3. ``E(x) = d(hue(x), h*) / 180`` with the circular distance ``d`` in degrees, so
   ``E`` lies in ``[0, 1]``: 0 at the target hue, 1 at the opposite hue.
4. An achromatic image (``|m| < ACHROMATIC``, no colour at all or colours that cancel) has
   no hue; it gets ``E = 1/2``, the mean distance of a uniformly random hue.

The energy only looks at the multiset of pixel colours, so it is invariant to any
rearrangement of the pixels (translations, flips, rotations of the shape) and to adding
neutral pixels (the background's grey level); rotating every pixel's hue by ``theta`` rotates
``hue(x)`` by ``theta``. EFM needs only its *values* on training images: no gradient is ever
taken, so any Python function of a batch of images may replace it.
"""

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from ._config import check_target_hue

ACHROMATIC = 1e-3
"""Mean resultant chroma below which an image counts as having no hue."""

EnergyFn = Callable[[np.ndarray], ArrayLike]
"""A batch energy: images ``[B, H, W, 3]`` (RGB in [0, 1]) -> energies ``[B]``."""


def check_images(images: ArrayLike, shape: tuple[int, int, int] | None = None) -> Array:
    """Return ``images`` as an array ``[B, H, W, 3]``; a one-line `ValueError` otherwise.

    With ``shape = (H, W, 3)`` the images must have exactly that shape (e.g. the data set's).
    """
    x = jnp.asarray(images)
    want = (
        "(batch, height, width, 3)" if shape is None else f"(batch, {', '.join(map(str, shape))})"
    )
    if x.ndim != 4 or x.shape[-1] != 3 or (shape is not None and tuple(x.shape[1:]) != shape):
        raise ValueError(f"images must have shape {want}, got {tuple(x.shape)}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"images must be floats in [0, 1], got dtype {x.dtype}; divide by 255.")
    return x


def pixel_hue_chroma(
    images: Float[Array, "*batch 3"],
) -> tuple[Float[Array, " *batch"], Float[Array, " *batch"]]:
    """HSV hue (degrees in ``[0, 360)``; 0 where chroma is 0) and chroma of every pixel."""
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    mx = jnp.max(images, axis=-1)
    mn = jnp.min(images, axis=-1)
    c = mx - mn
    safe = jnp.where(c > 0, c, 1.0)
    h = jnp.where(
        mx == r,
        jnp.mod((g - b) / safe, 6.0),
        jnp.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    return jnp.where(c > 0, 60.0 * h, 0.0), c


def mean_hue(
    images: Float[ArrayLike, "..."],
) -> tuple[Float[Array, " batch"], Bool[Array, " batch"]]:
    """Chroma-weighted circular mean hue (degrees) of each image, and whether it has one.

    Returns ``(hue [B], chromatic [B])``; ``hue`` is meaningless where ``chromatic`` is False.
    """
    x = check_images(images)
    h, c = pixel_hue_chroma(x)
    rad = jnp.deg2rad(h)
    m1 = jnp.mean(c * jnp.cos(rad), axis=(1, 2))
    m2 = jnp.mean(c * jnp.sin(rad), axis=(1, 2))
    hue = jnp.mod(jnp.rad2deg(jnp.arctan2(m2, m1)), 360.0)
    return hue, jnp.hypot(m1, m2) >= ACHROMATIC


def circular_distance(
    a: Float[ArrayLike, "*shape"], b: Float[ArrayLike, "*shape"]
) -> Float[Array, "*shape"]:
    """Distance between two angles in degrees, in ``[0, 180]``."""
    d = jnp.mod(jnp.asarray(a) - jnp.asarray(b), 360.0)
    return jnp.minimum(d, 360.0 - d)


def hue_energy(images: Float[ArrayLike, "..."], target_hue: float) -> Float[Array, " batch"]:
    """``E(x) = d(hue(x), target_hue) / 180`` in ``[0, 1]``; ``1/2`` for achromatic images.

    ``images``: ``[B, H, W, 3]`` RGB floats in ``[0, 1]``; ``target_hue`` in degrees
    ``[0, 360)`` (red 0, yellow 60, green 120, cyan 180, blue 240, magenta 300).
    """
    target = check_target_hue(target_hue)
    hue, chromatic = mean_hue(images)
    return jnp.where(chromatic, circular_distance(hue, target) / 180.0, 0.5)


def evaluate_energy(
    fn: EnergyFn, images: ArrayLike, shape: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Apply a user energy ``fn`` to a batch; check the shapes in and out and finiteness.

    Returns float64 energies ``[B]``. Any Python function works (non-differentiable too):
    EFM only needs its values.
    """
    x = np.asarray(check_images(images, shape))
    e = np.asarray(fn(x), dtype=np.float64)
    if e.shape != (x.shape[0],):
        raise ValueError(
            f"the energy function must return one value per image, shape ({x.shape[0]},); "
            f"got {e.shape}."
        )
    if not np.all(np.isfinite(e)):
        raise ValueError("the energy function returned NaN or inf; energies must be finite.")
    return e
