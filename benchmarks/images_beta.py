"""How a beta-input image run should draw its training betas: measured on shapes quick mode.

Trains the quick shapes run (16x16, 600 steps of batch 64, beta as a network input) with one
``beta_draw`` / ``beta_zero`` setting (or scores an existing run directory), then draws ``n``
samples at each beta and scores them against the exact target: mean energy (± standard
error) vs the exact target's, and the hue-class TV distance vs its finite-sample floor.
``z0`` is the beta-0 bias in standard errors, ``(mean E - target) / se``; a sampler that
matches the data at beta 0 gives ``|z0| < 3`` (the behavioural test's criterion).
Merges one record per ``--name`` (with its provenance) into
``benchmarks/results/images_beta.json``; prints it.

    python benchmarks/images_beta.py --name sample --beta-draw sample [--beta-zero 0.25]
        [--beta-net residual|input] [--beta-phi linear|energy] [--method efm|ed|cep]
        [--ed-param v|eps] [--steps 600] [--n 256] [--run-dir runs/images/NAME]
    python benchmarks/images_beta.py --name unguided --fixed-beta 0   # the plain CFM model
    python benchmarks/images_beta.py --name batch-old --score runs/images/shapes-efm
"""

import argparse
import os
import platform
import time
from pathlib import Path

import jax.random as jr
import numpy as np
from _record import RESULTS, write_result

import ewfm.images as im


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--name", required=True, help="record name in the results file")
    ap.add_argument("--beta-draw", default="sample", choices=list(im.BETA_DRAWS))
    ap.add_argument(
        "--beta-zero", type=float, default=None, help="default: 0.25 (input), 0 (residual)"
    )
    ap.add_argument("--beta-net", default="residual", choices=list(im.BETA_NETS))
    ap.add_argument("--beta-phi", default="linear", choices=list(im.BETA_PHIS))
    ap.add_argument("--ed-param", default="v", choices=list(im.ED_PARAMS))
    ap.add_argument("--beta-groups", type=int, default=4)
    ap.add_argument("--beta-scale", type=float, default=1.0)
    ap.add_argument(
        "--method", default="efm", choices=[m for m, g in im.GUIDANCE.items() if g == "beta"]
    )
    ap.add_argument(
        "--fixed-beta", type=float, default=None, help="train at this beta (0: the unguided model)"
    )
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--n", type=int, default=256, help="samples per beta")
    ap.add_argument("--betas", default="0,1,3,10")
    ap.add_argument("--score", default=None, help="score this run directory, do not train")
    ap.add_argument("--run-dir", default=None, help="where to save the trained run")
    ap.add_argument(
        "--out",
        default="benchmarks/results/images_beta.json",
        help="results file, under benchmarks/results/ (only its name counts)",
    )
    args = ap.parse_args()

    load0 = os.getloadavg()
    if args.score:
        run = im.load_run(args.score)
        cfg = run.cfg
        ts = im.training_set(cfg)
    else:
        cfg = im.resolve_config(
            "quick",
            overrides=dict(
                method=args.method,
                beta=args.fixed_beta,
                steps=args.steps,
                beta_draw=args.beta_draw,
                beta_zero=args.beta_zero,
                beta_net=args.beta_net,
                beta_phi=args.beta_phi,
                ed_param=args.ed_param,
                beta_groups=args.beta_groups,
                beta_scale=args.beta_scale,
            ),
        )
        ts = im.training_set(cfg)
        run = im.train(cfg, args.run_dir, data=ts)
    t0 = time.process_time()
    rows = []
    betas = [float(b) for b in args.betas.split(",")]
    if not cfg.beta_input:  # a fixed-beta run samples its own beta only
        betas = [float(cfg.beta)]  # type: ignore[arg-type]
    for i, beta in enumerate(betas):
        imgs = im.generate(run, jr.PRNGKey(100 + i), args.n, beta=beta)
        e = np.asarray(im.hue_energy(imgs, cfg.target_hue), np.float64)
        cls = im.image_classes(imgs, cfg.n_bins)
        target = im.exact_target(ts.energy, ts.classes, beta, cfg.n_bins)
        se = float(e.std(ddof=1) / np.sqrt(args.n))
        rows.append(
            {
                "beta": beta,
                "mean_energy": float(e.mean()),
                "se": se,
                "target": target.mean_energy,
                "z": (float(e.mean()) - target.mean_energy) / se,
                "tv": im.tv_distance(im.histogram(cls, cfg.n_bins), target.hist),
                "tv_floor": target.tv_floor(args.n, ts.classes),
            }
        )
        r = rows[-1]
        print(
            f"beta {beta:g}: E {r['mean_energy']:.3f} ± {se:.3f} (target {r['target']:.3f}, "
            f"z {r['z']:+.1f}); TV {r['tv']:.3f} (floor {r['tv_floor']:.3f})",
            flush=True,
        )
    record = {
        "config": cfg.to_json(),
        "scored": args.score,
        "n": args.n,
        "train_cpu_s": run.info.get("train_cpu_s"),
        "train_wall_s": run.info.get("train_wall_s"),
        "eval_cpu_s": time.process_time() - t0,
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "machine": platform.machine(),
        "rows": rows,
    }
    out = write_result(Path(args.out).stem, record, merge_key=args.name)
    where = out.relative_to(RESULTS.parent.parent)
    print(f"{args.name}: train {record['train_cpu_s']} CPU-s; wrote {where}")


if __name__ == "__main__":
    main()
