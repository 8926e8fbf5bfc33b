"""`ewfm toy`: 2D energy-guided generation scored against the exact target (ewfm.toy)."""

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="2D toy experiments: guided generation measured against the exact target.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _check_names(names: list[str], valid: tuple[str, ...], what: str) -> None:
    for n in names:
        if n not in valid:
            _fail(f"unknown {what} {n!r}; choose one of {', '.join(valid)}.")


def _check_beta(b: float) -> None:
    if not (b >= 0.0 and b < float("inf")):
        _fail(f"beta must be a finite number >= 0, got {b}.")


def _config(quick: bool, steps: int | None, seed: int) -> Any:
    from ewfm.toy import ToyConfig

    over: dict[str, Any] = {"seed": seed} | ({"steps": steps} if steps is not None else {})
    try:
        return ToyConfig.quick(**over) if quick else ToyConfig(**over)
    except ValueError as e:
        _fail(str(e))


@app.command()
def run(
    data: str = typer.Option(..., "--data", help="Data set: 8gaussians, swissroll, rings, ..."),
    method: str = typer.Option("efm", "--method", help="efm, ed, qgpo, fm, cfg or efm-beta."),
    beta: float = typer.Option(3.0, "--beta", help="Guidance strength beta >= 0."),
    out: Path = typer.Option(..., "--out", help="Directory for metrics.json and samples.png."),
    quick: bool = typer.Option(False, "--quick", help="Short training, few samples."),
    steps: int | None = typer.Option(None, "--steps", help="Override training steps."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train one method on one data set at one beta; write metrics.json and samples.png."""
    from ewfm.toy import DATASETS, METHODS

    _check_names([data], DATASETS, "data set")
    _check_names([method], METHODS, "method")
    _check_beta(beta)
    cfg = _config(quick, steps, seed)
    from rich.console import Console
    from rich.table import Table

    from ewfm.toy import run_experiment, save_run

    result = run_experiment(data, method, beta, cfg, progress=True)
    save_run(result, out, cfg)
    table = Table(title=f"{data} / {method} / beta = {beta:g}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        if isinstance(v, float):
            table.add_row(k, f"{v:.4g}")
    Console().print(table)
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'samples.png'}")


@app.command()
def sweep(
    out: Path = typer.Option(..., "--out", help="Directory for summary.json/.md and figures."),
    quick: bool = typer.Option(
        False, "--quick", help="Small version: 2 data sets, beta 0 and 3, short training."
    ),
    data: str | None = typer.Option(None, "--data", help="Comma-separated data sets."),
    methods: str | None = typer.Option(None, "--methods", help="Comma-separated methods."),
    betas: str | None = typer.Option(None, "--betas", help="Comma-separated betas."),
    steps: int | None = typer.Option(None, "--steps", help="Override training steps."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run data sets × methods × beta; write summary.json, summary.md and figure grids."""
    import sys

    from ewfm.toy import (
        DATASETS,
        METHODS,
        QUICK_BETAS,
        QUICK_DATASETS,
        SWEEP_BETAS,
    )

    ds = _split(data) if data else list(QUICK_DATASETS if quick else DATASETS)
    ms = _split(methods) if methods else list(METHODS)
    _check_names(ds, DATASETS, "data set")
    _check_names(ms, METHODS, "method")
    try:
        bs = (
            [float(b) for b in _split(betas)]
            if betas
            else list(QUICK_BETAS if quick else SWEEP_BETAS)
        )
    except ValueError:
        _fail(f"--betas must be comma-separated numbers, got {betas!r}.")
        return
    for b in bs:
        _check_beta(b)
    cfg = _config(quick, steps, seed)
    from ewfm.toy import sweep as run_sweep

    command = "ewfm " + " ".join(sys.argv[1:])
    summary = run_sweep(out, cfg, datasets=ds, methods=ms, betas=bs, progress=True, command=command)
    typer.echo(
        f"{len(summary['records'])} runs in {summary['seconds']:.0f} s; wrote "
        f"{out / 'summary.json'}, {out / 'summary.md'} and grid_*.png"
    )
    goals = summary["goals"]
    if goals:
        ok = sum(bool(g.get("ok_fm")) for g in goals)
        typer.echo(
            f"guided runs within 1.5x of unguided fm's distance to the data: {ok}/{len(goals)}"
        )
