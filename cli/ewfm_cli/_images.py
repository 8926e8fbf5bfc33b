"""`ewfm images`: colour-steered image generation (ewfm.images) scored against the exact target."""

import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Energy-guided image synthesis: steer generated images towards a target hue.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _load(run_dir: Path) -> Any:
    from ewfm.images import load_run

    try:
        return load_run(run_dir)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))


@app.command()
def train(
    data: str = typer.Option("shapes", "--data", help="Image set: shapes or twemoji."),
    target_hue: float = typer.Option(
        240.0, "--target-hue", help="Target hue in degrees [0, 360): 0 red, 120 green, 240 blue."
    ),
    method: str = typer.Option(
        "efm", "--method", help="efm (OT path), ed (VP path), cfg or cep (baselines)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory (config, model, metrics)."),
    size: int | None = typer.Option(
        None, "--size", help="Image size (default 16 for shapes and --quick, 32 for twemoji)."
    ),
    quick: bool = typer.Option(False, "--quick", help="16x16, small U-Net, 600 steps."),
    steps: int | None = typer.Option(None, "--steps", help="Override training steps."),
    beta: float | None = typer.Option(
        None, "--beta", help="Train at this fixed beta (default: beta as an input)."
    ),
    beta_max: float = typer.Option(10.0, "--beta-max", help="Beta-input range [0, beta_max]."),
    beta_draw: str = typer.Option(
        "sample", "--beta-draw", help="Beta-input training betas: sample, resample, groups, batch."
    ),
    beta_zero: float | None = typer.Option(
        None,
        "--beta-zero",
        help="Beta-input run: probability of training at beta = 0 exactly "
        "(default 0 with --beta-net residual, 0.25 with input).",
    ),
    beta_net: str = typer.Option(
        "residual",
        "--beta-net",
        help="Where beta enters: residual (u + beta/beta_max r; beta 0 is the unguided u) "
        "or input (the whole U-Net, Algorithm 6).",
    ),
    beta_phi: str = typer.Option(
        "linear",
        "--beta-phi",
        help="Residual net's scale phi(beta): linear (beta/beta_max) or energy (the exact "
        "target's share of the mean-energy shift at beta).",
    ),
    ed_param: str = typer.Option(
        "v",
        "--ed-param",
        help="What an ed run's U-Net predicts: v (eps = sigma x + alpha v) or eps.",
    ),
    energy: str = typer.Option(
        "hue", "--energy", help="'hue' or 'module:function' (images [B,H,W,3] -> [B])."
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train one energy-guided (or CFG) image generator; write a run directory."""
    from ewfm.images import DATASETS, METHODS

    if data not in DATASETS:
        _fail(f"unknown data set {data!r}; choose one of {', '.join(DATASETS)}.")
    if method not in METHODS:
        _fail(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    from ewfm.images import ImageConfig, MissingExtraError, train as train_run, training_set

    over: dict[str, Any] = {
        "data": data,
        "target_hue": target_hue,
        "method": method,
        "beta": beta,
        "beta_max": beta_max,
        "beta_draw": beta_draw,
        "beta_zero": beta_zero,
        "beta_net": beta_net,
        "beta_phi": beta_phi,
        "ed_param": ed_param,
        "energy": energy,
        "seed": seed,
    }
    if size is not None:
        over["size"] = size
    if steps is not None:
        over["steps"] = steps
    try:
        if quick or data == "shapes":
            cfg = ImageConfig.quick(**over)
        else:
            cfg = ImageConfig.showcase(**over)
        ts = training_set(cfg)
    except (ValueError, MissingExtraError) as e:
        _fail(str(e))
        return
    typer.echo(
        f"{len(ts)} training images {cfg.size}x{cfg.size}, mean energy {ts.energy.mean():.3f}; "
        f"{cfg.steps} steps of batch {cfg.batch_size}"
    )
    run = train_run(cfg, out, data=ts, progress=True)
    i = run.info
    typer.echo(
        f"trained in {i['train_wall_s']:.0f} s wall ({i['train_cpu_s']:.0f} CPU-s), "
        f"{i['n_params']} parameters; wrote {out}/config.json, model.eqx, metrics.json"
    )


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="A run directory from `ewfm images train`."),
    beta: float | None = typer.Option(None, "--beta", help="Guidance strength (efm/ed runs)."),
    scale: float = typer.Option(1.0, "--scale", help="CFG guidance scale w (cfg runs)."),
    n: int = typer.Option(64, "--n", help="Number of images."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="PNG grid to write."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Draw images from a trained run at one beta (any beta in [0, beta_max]) into a PNG grid."""
    if n < 1:
        _fail(f"--n must be >= 1, got {n}.")
    if beta is not None and not (0.0 <= beta < float("inf")):
        _fail(f"beta must be a finite number >= 0, got {beta}.")
    run = _load(run_dir)
    import time

    import jax.random as jr

    from ewfm.images import check_sampling_beta, generate, hue_energy, save_grid

    try:
        check_sampling_beta(run.cfg, beta)
    except ValueError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    images = generate(run, jr.PRNGKey(seed), n, beta=beta, scale=scale)
    seconds = time.perf_counter() - t0
    save_grid(images, out)
    msg = f"wrote {out} ({n} images in {seconds:.1f} s incl. compilation)"
    if run.cfg.energy == "hue":
        e = hue_energy(images, run.cfg.target_hue)
        msg += f"; mean energy {float(e.mean()):.3f}"
    typer.echo(msg)


@app.command()
def sweep(
    run_dir: Path = typer.Argument(..., help="A run directory from `ewfm images train`."),
    betas: str | None = typer.Option(None, "--betas", help="Comma-separated (default 0,1,3,10)."),
    n: int = typer.Option(256, "--n", help="Samples per beta."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: the run)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample every beta, score against the exact target; write sweep.json/.md/.png."""
    if n < 2:
        _fail(f"--n must be >= 2, got {n}.")
    bs = None
    if betas:
        try:
            bs = [float(b) for b in betas.split(",") if b.strip()]
        except ValueError:
            _fail(f"--betas must be comma-separated numbers, got {betas!r}.")
            return
    run = _load(run_dir)
    from ewfm.images import check_sampling_beta, sweep as run_sweep, write_sweep

    if bs is not None and run.cfg.method != "cfg":
        try:
            for b in bs:
                check_sampling_beta(run.cfg, b)
        except ValueError as e:
            _fail(str(e))
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("sweeping") as status:
        summary = run_sweep(
            run, betas=bs, n=n, seed=seed, on_step=lambda s: status.update(f"done: {s}")
        )
    summary["command"] = "ewfm " + " ".join(sys.argv[1:])
    dest = run_dir if out is None else out
    write_sweep(summary, dest)
    from ewfm.images import sweep_markdown

    typer.echo(sweep_markdown(summary))
    typer.echo(f"wrote {dest}/sweep.json, sweep.md and sweep.png")
