"""`ewfm toy`: 2D energy-guided generation scored against the exact target (ewfm.toy).

The settings flags are generated from `ewfm.toy.ToyConfig` (help, choices and defaults are
declared once, on its fields); the library checks every value.
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

_config = light_module("toy._config")
ToyConfig = _config.ToyConfig

app = typer.Typer(
    help="2D toy experiments: guided generation measured against the exact target.",
    no_args_is_help=True,
)

_PRESETS = preset_summary(_config.PRESETS)
_COMMON = [
    option(
        "preset", "default", "--preset",
        help=f"named settings to start from ({_PRESETS}); --config and flags override them",
        annotation=str,
    ),
    option("quick", False, "--quick", help="short for --preset quick", annotation=bool),
    option(
        "config", None, "--config",
        help="TOML file of settings: flat keys, or keys under a table named toy",
        annotation=Optional[Path],  # noqa: UP045 (typer reads the annotation)
    ),
]  # fmt: skip


def _settings(kwargs: dict[str, Any]) -> tuple[Any, str]:
    """The resolved `ToyConfig` and the preset name, from the flags the user gave."""
    import ewfm.toy as toy

    preset = kwargs.pop("preset")
    if kwargs.pop("quick"):
        preset = "quick"
    cfg = toy.resolve_config(preset, kwargs.pop("config"), given(kwargs, ToyConfig))
    return cfg, preset


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def run(**kwargs: Any) -> None:
    """Train one method on one data set at one beta; write metrics.json and samples.png."""
    out = kwargs.pop("out")
    try:
        import ewfm.toy as toy

        cfg, _ = _settings(kwargs)
        result = toy.train(cfg, out, progress=True)
    except (ValueError, ImportError, FileNotFoundError) as e:
        fail(str(e))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg.data} / {cfg.method} / beta = {cfg.beta:g}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        if isinstance(v, float):
            table.add_row(k, f"{v:.4g}")
    Console().print(table)
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'samples.png'}")


def sweep(**kwargs: Any) -> None:
    """Run data sets × methods × beta; write summary.json, summary.md and figure grids."""
    out = kwargs.pop("out")
    data, methods, betas = kwargs.pop("data"), kwargs.pop("methods"), kwargs.pop("betas")
    try:
        import ewfm.toy as toy

        cfg, preset = _settings(kwargs)
        quick = preset == "quick"
        summary = toy.sweep(
            out,
            cfg,
            datasets=_split(data) or (toy.QUICK_DATASETS if quick else toy.DATASETS),
            methods=_split(methods) or tuple(toy.METHODS),
            betas=_split(betas) or (toy.QUICK_BETAS if quick else toy.SWEEP_BETAS),
            progress=True,
            command="ewfm " + " ".join(sys.argv[1:]),
        )
    except (ValueError, ImportError, FileNotFoundError) as e:
        fail(str(e))
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


_run_out = option(
    "out",
    ...,
    "--out",
    "-o",
    help="directory for config.json, metrics.json, samples.npz and samples.png (empty, or a "
    "run of the same settings, which is redone)",
    annotation=Path,
)
_sweep_out = option(
    "out",
    ...,
    "--out",
    "-o",
    help="directory for config.json, summary.json, summary.md and the figure grids",
    annotation=Path,
)
_lists = [
    option(
        "data",
        None,
        "--data",
        help="comma-separated data sets [default: all six; with --quick: "
        + ",".join(_config.QUICK_DATASETS)
        + "]. Choices: "
        + ", ".join(_config.DATASETS),
        annotation=Optional[str],  # noqa: UP045
    ),
    option(
        "methods",
        None,
        "--methods",
        help="comma-separated methods [default: all]. Choices: "
        + "; ".join(f"{k}: {v}" for k, v in _config.METHODS.items()),
        annotation=Optional[str],  # noqa: UP045
    ),
    option(
        "betas",
        None,
        "--betas",
        help="comma-separated guidance strengths >= 0 [default: "
        + ",".join(f"{b:g}" for b in _config.SWEEP_BETAS)
        + "; with --quick: "
        + ",".join(f"{b:g}" for b in _config.QUICK_BETAS)
        + "]",
        annotation=Optional[str],  # noqa: UP045
    ),
]
_run_flags = [_run_out, *_COMMON, *config_options(ToyConfig)]
_sweep_flags = [_sweep_out, *_COMMON, *_lists, *config_options(ToyConfig, skip=_config.RUN_FIELDS)]
app.command("run")(with_signature(run, _run_flags))
app.command("sweep")(with_signature(sweep, _sweep_flags))
