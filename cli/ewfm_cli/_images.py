"""`ewfm images`: colour-steered image generation (ewfm.images) scored against the exact target.

The settings flags of ``train`` are generated from `ewfm.images.ImageConfig` (help, choices
and defaults are declared once, on its fields); the library checks every value.
"""

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import (
    config_options,
    fail,
    given,
    light_module,
    option,
    preset_summary,
    with_signature,
)

_config = light_module("images._config")
ImageConfig = _config.ImageConfig

app = typer.Typer(
    help="Energy-guided image synthesis: steer generated images towards a target hue.",
    no_args_is_help=True,
)

_PRESETS = preset_summary(_config.PRESETS)
_ERRORS = (ValueError, ImportError, FileNotFoundError)  # ConfigError, MissingExtraError among them


def train(**kwargs: Any) -> None:
    """Train one energy-guided (or baseline) image generator; write a run directory."""
    out, preset = kwargs.pop("out"), kwargs.pop("preset")
    if kwargs.pop("quick"):
        preset = "quick"
    try:
        import ewfm.images as im

        cfg = im.resolve_config(preset, kwargs.pop("config"), given(kwargs, ImageConfig))
        typer.echo(
            f"{cfg.method} on {cfg.data} {cfg.size}x{cfg.size}, target hue {cfg.target_hue:g}: "
            f"{cfg.steps} steps of batch {cfg.batch_size}"
        )
        run = im.train(cfg, out, progress=True)
    except _ERRORS as e:
        fail(str(e))
    i = run.info
    typer.echo(
        f"{i['n_train']} training images, mean energy {i['data_mean_energy']:.3f}; trained in "
        f"{i['train_wall_s']:.0f} s wall ({i['train_cpu_s']:.0f} CPU-s), {i['n_params']} "
        f"parameters; wrote {out}/config.json, model.eqx, metrics.json"
    )


def sample(
    run_dir: Path = typer.Argument(..., help="A run directory from `ewfm images train`."),
    beta: Optional[float] = typer.Option(  # noqa: UP045 (typer reads the annotation)
        None,
        "--beta",
        help="Inverse temperature to sample at (efm, ed and cep runs): any value in "
        "[0, beta_max] for a beta-input run; larger steers harder towards the target hue.",
    ),
    scale: Optional[float] = typer.Option(  # noqa: UP045
        None, "--scale", help="Guidance scale w (cfg runs only; default 1)."
    ),
    n: int = typer.Option(64, "--n", help="Number of images."),
    out: Path = typer.Option(Path("grid.png"), "--out", help="PNG grid to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the initial noise."),
) -> None:
    """Draw images from a trained run at one beta (or cfg scale) into a PNG grid."""
    import time

    import jax.random as jr

    try:
        import ewfm.images as im

        run = im.load_run(run_dir)
        t0 = time.perf_counter()
        images = im.generate(run, jr.PRNGKey(seed), n, beta=beta, scale=scale)
    except _ERRORS as e:
        fail(str(e))
    seconds = time.perf_counter() - t0
    im.save_grid(images, out)
    msg = f"wrote {out} ({n} images in {seconds:.1f} s incl. compilation)"
    if run.cfg.energy == "hue":
        e = im.hue_energy(images, run.cfg.target_hue)
        msg += f"; mean energy {float(e.mean()):.3f}"
    typer.echo(msg)


def sweep(
    run_dir: Path = typer.Argument(..., help="A run directory from `ewfm images train`."),
    betas: Optional[str] = typer.Option(  # noqa: UP045
        None, "--betas", help="Comma-separated betas (default 0,1,3,10 up to beta_max)."
    ),
    n: int = typer.Option(256, "--n", help="Samples per beta."),
    out: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--out", help="Output directory (default: the run directory)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the samples."),
) -> None:
    """Sample every beta, score against the exact target; write sweep.json/.md/.png."""
    try:
        bs = None if not betas else [float(b) for b in betas.split(",") if b.strip()]
    except ValueError:
        fail(f"--betas must be comma-separated numbers, got {betas!r}.")
    try:
        import ewfm.images as im

        summary = im.sweep(im.load_run(run_dir), betas=bs, n=n, seed=seed, progress=True)
    except _ERRORS as e:
        fail(str(e))
    summary["command"] = "ewfm " + " ".join(sys.argv[1:])
    dest = run_dir if out is None else out
    im.write_sweep(summary, dest)
    typer.echo(im.sweep_markdown(summary))
    typer.echo(f"wrote {dest}/sweep.json, sweep.md and sweep.png")


_train_options = [
    option(
        "out", ..., "--out", "-o",
        help="run directory for config.json, model.eqx and metrics.json (new, empty, or a run "
        "of the same settings, which is trained anew)",
        annotation=Path,
    ),
    option(
        "preset", None, "--preset",
        help=f"named settings to start from ({_PRESETS}); --config and flags override them "
        "(default: showcase for --data twemoji, else quick)",
        annotation=Optional[str],  # noqa: UP045
    ),
    option("quick", False, "--quick", help="short for --preset quick", annotation=bool),
    option(
        "config", None, "--config",
        help="TOML file of settings: flat keys, or keys under a table named images",
        annotation=Optional[Path],  # noqa: UP045
    ),
]  # fmt: skip
app.command("train")(
    with_signature(
        train,
        _train_options
        + config_options(
            ImageConfig,
            first=("data", "method", "target_hue", "beta"),
            preset_note="; the preset may change it",
        ),
    )
)
app.command("sample")(sample)
app.command("sweep")(sweep)
