"""Sample-quality metrics for image generators, each with a reference that says what is good.

- Guidance: mean energy of the samples against the exact target's (`energy_summary`), and the
  total-variation distance between hue histograms (`ewfm.images.tv_distance`, with the
  finite-sample floor `ExactTarget.tv_floor`).
- Fidelity: `mmd` -- the unbiased squared maximum mean discrepancy with a Gaussian kernel on
  raw pixels, summed over bandwidths ``{1/2, 1, 2} x`` the median pairwise distance of the
  data. Pixels rather than features of a pretrained net, because none can be downloaded here
  and random features would add nothing a pixel kernel lacks at 16x16 or 32x32; the kernel
  is characteristic, so MMD = 0 iff the distributions agree. Its noise floor is the MMD
  between two disjoint data subsets of the same size (`mmd_with_floor`).
- Memorisation: `nearest_neighbour` -- each sample's pixel distance to its nearest training
  image, against each held-out data image's distance to its nearest training image. A model
  that copies training images has sample distances far *below* the held-out ones.
"""

import numpy as np
from jaxtyping import ArrayLike


def energy_summary(energy: ArrayLike) -> dict[str, float]:
    """Mean energy and its standard error."""
    e = np.asarray(energy, np.float64)
    return {"mean": float(e.mean()), "se": float(e.std(ddof=1) / np.sqrt(len(e)))}


def _flat(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, np.float64)
    return a.reshape(a.shape[0], -1)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def median_bandwidth(x: ArrayLike) -> float:
    """Median pairwise Euclidean distance of a sample (the kernel's reference scale)."""
    a = _flat(x)
    d = np.sqrt(_sq_dists(a, a))
    return float(np.median(d[np.triu_indices(len(a), 1)]))


def mmd(x: ArrayLike, y: ArrayLike, bandwidth: float) -> float:
    """Unbiased MMD^2 of samples ``x`` and ``y``; Gaussian kernels at 0.5, 1, 2 x bandwidth."""
    a, b = _flat(x), _flat(y)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"mmd needs >= 2 samples on each side, got {len(a)} and {len(b)}.")
    daa, dbb, dab = _sq_dists(a, a), _sq_dists(b, b), _sq_dists(a, b)
    total = 0.0
    for s in (0.5, 1.0, 2.0):
        g = 2.0 * (s * bandwidth) ** 2
        kaa, kbb, kab = np.exp(-daa / g), np.exp(-dbb / g), np.exp(-dab / g)
        n, m = len(a), len(b)
        total += (kaa.sum() - np.trace(kaa)) / (n * (n - 1))
        total += (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
        total -= 2.0 * kab.mean()
    return float(total)


def mmd_with_floor(samples: ArrayLike, data: ArrayLike, *, seed: int = 0) -> dict[str, float]:
    """MMD^2 of ``samples`` against ``n`` data images, and the floor: two other disjoint
    ``n``-subsets of the data against each other (needs ``3 n`` data images)."""
    s = np.asarray(samples)
    n = len(s)
    d = np.asarray(data)
    if len(d) < 3 * n:
        raise ValueError(f"mmd_with_floor needs >= {3 * n} data images for {n} samples.")
    idx = np.random.default_rng(seed).permutation(len(d))
    ref, f1, f2 = d[idx[:n]], d[idx[n : 2 * n]], d[idx[2 * n : 3 * n]]
    bw = median_bandwidth(ref)
    return {"mmd2": mmd(s, ref, bw), "floor": mmd(f1, f2, bw), "bandwidth": bw, "n": float(n)}


def nearest_neighbour(
    samples: ArrayLike, train: ArrayLike, held_out: ArrayLike
) -> dict[str, float]:
    """Pixel distances (RMS per pixel channel) to the nearest training image.

    Returns the medians for samples and for held-out data images, their ratio, and the
    fraction of samples nearer to a training image than the 5% quantile of held-out images
    (about 0.05 for a model that does not copy; near 1 for one that does).
    """
    tr = _flat(train)
    dim = tr.shape[1]

    def nn(x):
        return np.sqrt(_sq_dists(_flat(x), tr).min(axis=1) / dim)

    ds, dh = nn(samples), nn(held_out)
    q05 = float(np.quantile(dh, 0.05))
    return {
        "sample_median": float(np.median(ds)),
        "held_out_median": float(np.median(dh)),
        "ratio": float(np.median(ds) / np.median(dh)),
        "frac_below_held_out_q05": float(np.mean(ds < q05)),
    }
