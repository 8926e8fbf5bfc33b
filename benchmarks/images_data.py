"""Image data sets and their exact targets: class shares, target statistics, load times.

For the ``quick`` (16x16 shapes) and ``showcase`` (32x32 Twemoji) presets: the training
set's size and hue-class shares, the exact guided target at each beta of the sweeps (mean
energy, effective sample size, the target hue's class share), ``energy_phi`` at a few betas
(the ``--beta-phi energy`` curve) against ``beta / beta_max``, and how long the data take to
make: shapes generated, Twemoji rendered from the PNGs without the cache and read from the
cache. Needs the ``[images]`` extra for Twemoji. Writes
``benchmarks/results/images_data.json``.

    python benchmarks/images_data.py
"""

import argparse
import time
from typing import Any

import numpy as np
from _record import write_result

import ewfm.images as im

BETAS = (0.0, 1.0, 3.0, 10.0)
PHI_AT = (1.0, 2.5, 5.0)


def describe(preset: str) -> dict[str, Any]:
    cfg = im.resolve_config(preset)
    ts = im.training_set(cfg)
    n_bins = cfg.n_bins
    width = 360.0 / n_bins
    names = [f"{k * width:g}" for k in range(n_bins)] + ["achromatic"]
    share = im.histogram(ts.classes, n_bins)
    target_class = int(im.hue_class(np.array([cfg.target_hue]), np.array([True]), n_bins)[0])
    targets = []
    for b in BETAS:
        t = im.exact_target(ts.energy, ts.classes, b, n_bins)
        targets.append(
            {
                "beta": b,
                "mean_energy": t.mean_energy,
                "ess": t.ess,
                "target_class_share": float(t.hist[target_class]),
            }
        )
    knots = im.energy_phi(ts.energy, cfg.beta_max)
    grid = np.linspace(0.0, cfg.beta_max, len(knots))
    phi = [
        {"beta": b, "energy": float(np.interp(b, grid, knots)), "linear": b / cfg.beta_max}
        for b in PHI_AT
    ]
    return {
        "data": cfg.data,
        "size": cfg.size,
        "target_hue": cfg.target_hue,
        "training_images": len(ts),
        "held_out": int(ts.held_out.shape[0]),
        "class_share": dict(zip(names, map(float, share), strict=True)),
        "target_class": names[target_class],
        "exact_target": targets,
        "phi": phi,
    }


def timings(size: int) -> dict[str, float]:
    t0 = time.perf_counter()
    im.make_shapes(4096, 16, seed=0)
    shapes_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    im.load_twemoji(size, cache=False)
    render_s = time.perf_counter() - t0
    im.load_twemoji(size)  # writes the cache if it is missing
    t0 = time.perf_counter()
    im.load_twemoji(size)
    read_s = time.perf_counter() - t0
    return {"shapes_4096_16px_s": shapes_s, "twemoji_render_s": render_s, "twemoji_read_s": read_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.parse_args()
    record = {
        "presets": {p: describe(p) for p in ("quick", "showcase")},
        "timings": timings(32),
    }
    path = write_result("images_data", record)
    for p, d in record["presets"].items():
        top = sorted(d["class_share"].items(), key=lambda kv: -kv[1])[:4]
        print(p, d["training_images"], "images;", ", ".join(f"{k}: {v:.3f}" for k, v in top))
    print(record["timings"], "->", path)


if __name__ == "__main__":
    main()
