"""`ewfm train` and `ewfm evaluate`: thin wrappers around `ewfm.rl.train` / `ewfm.rl.evaluate_run`.

Every field of `ewfm.rl.TrainConfig` is also a flag (``--beta-q 5``, ``--keep-data-action
false``); the flags are generated from the dataclass so they never drift from it.
"""

import dataclasses
import inspect
import time
from pathlib import Path
from typing import Any, Optional

import typer


def _load_config_module() -> Any:
    """`ewfm/rl/_config.py` loaded on its own (stdlib only), so ``ewfm --help`` stays fast.

    Importing it as ``ewfm.rl._config`` would import jax and the RL extras first; the CLI
    only needs the field names and defaults to generate the flags.
    """
    import importlib.util

    spec = importlib.util.find_spec("ewfm")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "rl" / "_config.py"
    mspec = importlib.util.spec_from_file_location("_ewfm_train_config", path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


_cfgmod = _load_config_module()
FIELDS: dict[str, dataclasses.Field] = _cfgmod.FIELDS
TrainConfig = _cfgmod.TrainConfig
_MAIN = ("algo", "dataset", "seed", "seeds")
_DEFAULTS = TrainConfig()


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", err=True, fg="red")
    raise typer.Exit(2)


def _train(
    out: Path | None,
    preset: str,
    config: Path | None,
    resume: bool,
    quiet: bool,
    overrides: dict[str, Any],
    reuse: Path | None = None,
) -> None:
    from ewfm.rl import ConfigError, resolve_config, train
    from ewfm.rl._config import config_from_json, load_toml
    from ewfm.rl._pipeline import RunDir

    try:
        if resume:
            if out is None:
                _fail("--resume needs --out RUN_DIR (the run to continue).")
            assert out is not None
            run = RunDir(out)
            if not run.config_path.exists():
                _fail(f"{out} holds no config.json: nothing to resume; drop --resume.")
            base = config_from_json(run.config_path).to_dict()
            if config is not None:
                base.update(load_toml(config))
            base.update({k: v for k, v in overrides.items() if v is not None})
            cfg = resolve_config("quick", None, base)
        else:
            cfg = resolve_config(preset, config, overrides)
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{cfg.algo}-{cfg.dataset.replace('/', '_')}-s{cfg.seed}-{stamp}"
        typer.echo(f"ewfm train: {cfg.algo} on {cfg.dataset} (preset {preset}) -> {out}")
        t0 = time.perf_counter()
        summary = train(cfg, out, resume=resume, progress=not quiet, log=typer.echo, reuse=reuse)
    except (ConfigError, FileNotFoundError, FileExistsError, KeyError) as e:
        _fail(str(e).strip("'\""))
        return
    except ValueError as e:  # e.g. an unknown dataset name from ewfm.rl
        _fail(str(e))
        return
    typer.echo(
        f"final normalised score ({cfg.algo}, {summary['dataset']}, {summary['episodes']} "
        f"episodes): {summary['score_mean']:.1f} ± {summary['score_std']:.1f}   "
        f"[{time.perf_counter() - t0:.0f} s; {out}/summary.json]"
    )


def _option(name: str, f: dataclasses.Field) -> inspect.Parameter:
    default = getattr(_DEFAULTS, name)
    kind = type(default)
    flag = "--" + name.replace("_", "-")
    help_ = f"(default {default!r}; preset/--config may change it)"
    ann: Any = Optional[str] if kind is bool else Optional[kind]  # noqa: UP045
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, flag, help=help_, show_default=False),
        annotation=ann,
    )


def train_command(**kwargs: Any) -> None:
    """Train an offline-RL policy: QIPO-OT, QIPO-Diff, or the BC / QGPO baselines.

    With no arguments: QIPO-OT on hopper-medium with the quick preset (the dataset is built
    first if missing), printing the final normalised score.
    """
    out = kwargs.pop("out")
    preset = kwargs.pop("preset")
    config = kwargs.pop("config")
    resume = kwargs.pop("resume")
    quiet = kwargs.pop("quiet")
    reuse = kwargs.pop("reuse")
    _train(out, preset, config, resume, quiet, kwargs, reuse)


_fixed = [
    inspect.Parameter(
        "out",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, "--out", "-o", help="run directory (default runs/ALGO-...)"),
        annotation=Optional[Path],  # noqa: UP045
    ),
    inspect.Parameter(
        "preset",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option("quick", "--preset", help="quick (CPU-sized) or paper"),
        annotation=str,
    ),
    inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, "--config", help="TOML file of config keys"),
        annotation=Optional[Path],  # noqa: UP045
    ),
    inspect.Parameter(
        "resume",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--resume", help="continue RUN_DIR from its last epoch"),
        annotation=bool,
    ),
    inspect.Parameter(
        "reuse",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            "--reuse",
            help="start from RUN's behaviour + critic checkpoints (same settings, same path)",
        ),
        annotation=Optional[Path],  # noqa: UP045
    ),
    inspect.Parameter(
        "quiet",
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(False, "--quiet", help="no progress bars"),
        annotation=bool,
    ),
]
_ordered = [n for n in _MAIN if n in FIELDS] + [n for n in FIELDS if n not in _MAIN]
train_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    _fixed + [_option(n, FIELDS[n]) for n in _ordered]
)


def evaluate_command(
    run: Path = typer.Argument(..., help="a run directory made by `ewfm train`"),
    episodes: int | None = typer.Option(None, help="episodes (default: final_episodes)"),
    seed: int = typer.Option(12345, help="environment seed of the first episode"),
    checkpoint: str | None = typer.Option(
        None, help="an eval_*.eqx file in RUN/checkpoints (default: the final policy)"
    ),
    guidance: float | None = typer.Option(
        None, help="QGPO only: energy-gradient scale to sample with (default: the run's)"
    ),
) -> None:
    """Re-evaluate a trained policy in its Gymnasium environment (normalised score)."""
    from ewfm.rl import ConfigError, evaluate_run

    if episodes is not None and episodes < 1:
        _fail(f"--episodes must be >= 1, got {episodes}.")
    try:
        ev = evaluate_run(
            run, episodes=episodes, seed=seed, checkpoint=checkpoint, guidance=guidance
        )
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    typer.echo(
        f"{ev['checkpoint']}"
        + (f" (guidance {ev['guidance']:g})" if ev.get("guidance") is not None else "")
        + f": normalised score {ev['score_mean']:.1f} ± {ev['score_std']:.1f} "
        f"over {ev['episodes']} episodes (return {ev['return_mean']:.1f})"
    )
