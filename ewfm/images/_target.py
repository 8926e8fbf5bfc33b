"""The exact guided target on a finite image set, and hue histograms.

The data distribution ``p`` is uniform over the N training images, so the guided target
``pi ∝ p exp(-beta E)`` (Theorem 4.1) puts mass ``softmax(-beta E)_i`` on image i: its hue
histogram and mean energy are finite sums, known exactly for every beta.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .._weights import energy_weights
from ._energy import circular_distance


def n_classes(n_bins: int) -> int:
    """Hue classes: ``n_bins`` hue bins plus one for achromatic images."""
    return n_bins + 1


def hue_class(hue: ArrayLike, chromatic: ArrayLike, n_bins: int = 12) -> np.ndarray:
    """The class of each image: hue bin ``k`` covers ``[k w - w/2, k w + w/2)`` degrees
    (``w = 360 / n_bins``, so red 0, green 120 and blue 240 are bin centres); achromatic
    images get class ``n_bins``."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}.")
    w = 360.0 / n_bins
    k = np.floor(np.mod(np.asarray(hue, np.float64) + w / 2.0, 360.0) / w).astype(np.int64)
    return np.where(np.asarray(chromatic, bool), np.minimum(k, n_bins - 1), n_bins)


def histogram(classes: ArrayLike, n_bins: int, weights: ArrayLike | None = None) -> np.ndarray:
    """Probabilities of the ``n_bins + 1`` hue classes (weights are normalised)."""
    c = np.asarray(classes, np.int64)
    w = np.ones(c.shape, np.float64) if weights is None else np.asarray(weights, np.float64)
    h = np.bincount(c, weights=w, minlength=n_classes(n_bins)).astype(np.float64)
    return h / h.sum()


def tv_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Total-variation distance ``(1/2) sum |p - q|`` between two histograms."""
    return 0.5 * float(np.sum(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64))))


def target_weights(energy: ArrayLike, beta: float) -> np.ndarray:
    """Probabilities ``softmax(-beta E)`` of the guided target over the training images.

    Computed with `ewfm.energy_weights` (log-sum-exp, finite for any beta), in float64.
    """
    with jax.enable_x64(True):
        e = jnp.asarray(np.asarray(energy, np.float64))
        w = energy_weights(e, float(beta)) / e.shape[0]
        return np.asarray(w, np.float64)


@dataclasses.dataclass(frozen=True)
class ExactTarget:
    """The guided target at one beta: its mean energy, energy variance and hue histogram."""

    beta: float
    mean_energy: float
    energy_std: float
    hist: np.ndarray
    weights: np.ndarray
    ess: float  # effective sample size 1 / sum w_i^2 of the reweighted set

    def tv_floor(self, n: int, classes: np.ndarray, *, repeats: int = 50, seed: int = 0) -> float:
        """Mean TV distance between the histogram of ``n`` exact target draws and the target.

        The finite-sample floor of `tv_distance` for ``n`` samples: a model that samples the
        target exactly scores about this.
        """
        rng = np.random.default_rng(seed)
        n_bins = self.hist.shape[0] - 1
        tvs = [
            tv_distance(
                histogram(classes[rng.choice(len(classes), n, p=self.weights)], n_bins), self.hist
            )
            for _ in range(repeats)
        ]
        return float(np.mean(tvs))


def exact_target(energy: ArrayLike, classes: ArrayLike, beta: float, n_bins: int) -> ExactTarget:
    """The exact target at ``beta`` of a training set with these energies and hue classes."""
    e = np.asarray(energy, np.float64)
    w = target_weights(e, beta)
    mean = float(np.sum(w * e))
    std = float(np.sqrt(max(np.sum(w * (e - mean) ** 2), 0.0)))
    return ExactTarget(
        float(beta), mean, std, histogram(classes, n_bins, w), w, float(1.0 / np.sum(w**2))
    )


def hue_target_closed_form(
    hue_levels: ArrayLike, target_hue: float, beta: float
) -> tuple[np.ndarray, float]:
    """Target over equally likely discrete hues, enumerated directly: ``(probs, mean E)``.

    Used to check `exact_target` on procedural data whose hues take only these values.
    """
    levels = np.asarray(hue_levels, np.float64)
    e = np.asarray(circular_distance(levels, target_hue), np.float64) / 180.0
    un = np.exp(-beta * (e - e.min()))
    p = un / un.sum()
    return p, float(np.sum(p * e))
