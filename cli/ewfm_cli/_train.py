"""`ewfm train` and `ewfm evaluate`: thin wrappers around `ewfm.rl.train` / `ewfm.rl.evaluate_run`.

Every field of `ewfm.rl.TrainConfig` is also a flag (``--beta-q 5``, ``--keep-data-action
false``), generated from the dataclass with its help text, choices and default, so the flags
never drift from it. The library does all validation; this module only reports its errors.
"""

import dataclasses
import inspect
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ._common import config_options, fail, given, light_module, option, with_signature

_config = light_module("rl._config")  # stdlib only: `ewfm --help` does not import JAX
TrainConfig = _config.TrainConfig
_PAPER: dict[str, Any] = _config.PRESETS["paper"]
_MAIN = ("method", "dataset", "seed", "seeds")


def train_command(**kwargs: Any) -> None:
    """Train an offline-RL policy: QIPO-OT, QIPO-Diff, or the BC and QGPO baselines.

    With no arguments: QIPO-OT on hopper-medium with the quick preset (the dataset is built
    first if it is missing), printing the final normalised score. Settings resolve as
    --preset, then --config FILE.toml, then the flags below.
    """
    out, preset, config, resume, quiet, reuse = (
        kwargs.pop(k) for k in ("out", "preset", "config", "resume", "quiet", "reuse")
    )
    overrides = given(kwargs, TrainConfig)
    if resume and out is None:
        fail("--resume needs --out RUN_DIR (the run to continue).")
    if resume and preset is not None:
        fail("--preset applies to new runs; a resumed run keeps its config.json: drop --preset.")
    import ewfm.rl as rl

    try:
        if resume:
            cfg = rl.resume_config(out, config, overrides)
        else:
            cfg = rl.resolve_config(preset or "quick", config, overrides)
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"{cfg.method}-{cfg.dataset.replace('/', '_')}-s{cfg.seed}-{stamp}"
            out = Path("runs") / name
        how = "resumed" if resume else f"preset {preset or 'quick'}"
        typer.echo(f"ewfm train: {cfg.method} on {cfg.dataset} ({how}) -> {out}")
        t0 = time.perf_counter()
        summary = rl.train(cfg, out, resume=resume, progress=not quiet, log=typer.echo, reuse=reuse)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, rl.MissingExtraError) as e:
        fail(str(e))
    typer.echo(
        f"final normalised score ({cfg.method}, {summary['dataset']}, {summary['episodes']} "
        f"episodes): {summary['score_mean']:.1f} ± {summary['score_std']:.1f}   "
        f"[{time.perf_counter() - t0:.0f} s; {out}/summary.json]"
    )
    if "behaviour_score_mean" in summary:  # every method but bc scores its own BC warm-up
        typer.echo(
            f"its behaviour model (BC): {summary['behaviour_score_mean']:.1f} ± "
            f"{summary['behaviour_score_std']:.1f}"
        )


def _shown(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _config_flags() -> list[inspect.Parameter]:
    """One flag per setting, the main ones first; each notes the paper preset's value."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    ordered = [n for n in _MAIN if n in names] + [n for n in names if n not in _MAIN]
    flags = []
    for name in ordered:
        note = f"; paper preset: {_shown(_PAPER[name])}" if name in _PAPER else ""
        skip = [n for n in names if n != name]
        flags += config_options(TrainConfig, skip=skip, preset_note=note)
    return flags


_PRESET_HELP = (
    "named settings for a new run (default: quick): quick is CPU-sized, minutes to an hour "
    "(the defaults below); paper is the paper's scale, days on a CPU (each flag it changes "
    "notes its value); --config and flags override them"
)

with_signature(
    train_command,
    [
        option(
            "out", None, "--out", "-o",
            help="run directory (default runs/METHOD-DATASET-sSEED-TIME); it must be new or "
            "empty, unless --resume",
            annotation=Optional[Path],  # noqa: UP045 (typer reads the annotation)
        ),
        option("preset", None, "--preset", help=_PRESET_HELP, annotation=Optional[str]),  # noqa: UP045
        option(
            "config", None, "--config",
            help="TOML file of settings: flat keys, or keys under a table named train; flags "
            "override it",
            annotation=Optional[Path],  # noqa: UP045
        ),
        option(
            "resume", False, "--resume",
            help="continue the run in --out from its last finished epoch (its config.json "
            "holds the settings; flags that differ from it are refused)",
            annotation=bool,
        ),
        option(
            "reuse", None, "--reuse",
            help="start a new run from RUN's behaviour and critic checkpoints instead of "
            "training them again (same settings and path, e.g. qipo-diff on a qgpo run)",
            annotation=Optional[Path],  # noqa: UP045
        ),
        option("quiet", False, "--quiet", help="no progress bars", annotation=bool),
        *_config_flags(),
    ],
)  # fmt: skip


def evaluate_command(
    run: Path = typer.Argument(..., help="a run directory made by `ewfm train`"),
    episodes: int | None = typer.Option(
        None, help="episodes per seed [default: the run's final_episodes]"
    ),
    seed: int = typer.Option(12345, help="environment seed of the first episode"),
    checkpoint: str | None = typer.Option(
        None, help="an eval_*.eqx file in RUN/checkpoints [default: the final policy]"
    ),
    guidance: float | None = typer.Option(
        None, help="qgpo only: energy-gradient scale to sample with [default: the run's]"
    ),
    model: str = typer.Option(
        "policy",
        help="what to score: policy (the final policy or --checkpoint) or behaviour (the run's "
        "BC warm-up)",
    ),
    best_of: int = typer.Option(
        1,
        help="act with the highest-Q of N draws by the run's critic (IDQL's extraction; an "
        "evaluation extra, reported apart from the policy's own score)",
    ),
    deterministic: bool = typer.Option(
        False, help="integrate from the noise x1 = 0 instead of a random draw"
    ),
) -> None:
    """Re-evaluate a trained policy in its Gymnasium environment (normalised score).

    Every evaluation is also appended to RUN/evaluations.jsonl.
    """
    import ewfm.rl as rl

    try:
        ev = rl.evaluate_run(
            run, episodes=episodes, seed=seed, checkpoint=checkpoint, guidance=guidance,
            model=model, best_of=best_of, deterministic=deterministic,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, rl.MissingExtraError) as e:
        fail(str(e))
    typer.echo(
        f"{ev['checkpoint']}"
        + (f" ({ev['extract']})" if ev["extract"] != "sample" else "")
        + (f" (guidance {ev['guidance']:g})" if ev.get("guidance") is not None else "")
        + f": normalised score {ev['score_mean']:.1f} ± {ev['score_std']:.1f} "
        f"over {ev['episodes']} episodes (return {ev['return_mean']:.1f})"
    )
