"""``ewfm data``: build, list and describe offline-RL datasets (Minari)."""

import contextlib
from collections.abc import Iterator

import typer

from ._common import fail

app = typer.Typer(
    help="Offline RL datasets: build D4RL-style ones from the policy pack, list, describe.",
    no_args_is_help=True,
)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The library's refusals (unknown name, missing extra or dataset, a build already there
    or under way) as the one-line error exit; the library checks, the CLI only reports."""
    import ewfm.rl as rl

    try:
        yield
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        rl.MissingExtraError,
        rl.BuildInProgressError,
    ) as e:
        fail(str(e))


@app.command()
def build(
    name: str = typer.Argument(..., help="ENV-KIND, e.g. hopper-medium (see `ewfm data list`)."),
    steps: int | None = typer.Option(
        None, "--steps", "-n", help="Build a smaller dataset of about N transitions."
    ),
    seed: int | None = typer.Option(None, help="Replace the recipe's seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
    envs: int = typer.Option(32, help="Environments run in lock step."),
    workers: int | None = typer.Option(
        None, help="Processes stepping them (default: 2 for >= 200k steps, else 1)."
    ),
) -> None:
    """Build a D4RL-style dataset on Gymnasium MuJoCo v5 from the bundled policy pack."""
    import ewfm.rl as rl

    with _refusals():
        id_ = rl.build_dataset(
            name, steps=steps, overwrite=overwrite, seed=seed, n_envs=envs, workers=workers
        )
    info = rl.dataset_info(id_)
    typer.echo(
        f"{id_}: {info.transitions} transitions, {info.episodes} episodes, normalised return "
        f"{info.normalized_mean:.1f} ± {info.normalized_std:.1f}; built in "
        f"{info.recipe['build_seconds']:.1f} s ({info.recipe['steps_per_second']:.0f} "
        "simulated steps/s)"
    )


@app.command("list")
def list_() -> None:
    """Built-in recipes (built or not) and the local Minari datasets."""
    from rich.console import Console
    from rich.table import Table

    import ewfm.rl as rl

    with _refusals():
        rows = rl.list_datasets()
    table = Table("name", "Minari id", "local", "transitions", "episodes")
    for row in rows:
        table.add_row(
            row.name or "-",
            row.dataset_id,
            "yes" if row.local else "no",
            "-" if row.transitions is None else str(row.transitions),
            "-" if row.episodes is None else str(row.episodes),
        )
    Console().print(table)


@app.command()
def info(
    name_or_id: str = typer.Argument(..., help="A built-in name or a local Minari dataset id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Size, episodes and return statistics (raw and D4RL-normalised) of a local dataset."""
    import ewfm.rl as rl

    with _refusals():
        info_ = rl.dataset_info(name_or_id)
    if as_json:
        import json

        typer.echo(json.dumps(info_.as_dict(), indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    table = Table("", "value", title=info_.dataset_id, show_header=False)
    table.add_row("environment", info_.env_id)
    table.add_row("path", info_.path)
    table.add_row("transitions", str(info_.transitions))
    table.add_row(
        "episodes",
        f"{info_.episodes} ({info_.terminations} terminated, {info_.timeouts} time-limit)",
    )
    table.add_row("observation / action dim", f"{info_.observation_dim} / {info_.action_dim}")
    table.add_row(
        "return mean ± std (min, max)",
        f"{fmt(info_.return_mean)} ± {fmt(info_.return_std)} "
        f"({fmt(info_.return_min)}, {fmt(info_.return_max)})",
    )
    table.add_row(
        "normalised mean ± std (min, max)",
        f"{fmt(info_.normalized_mean)} ± {fmt(info_.normalized_std)} "
        f"({fmt(info_.normalized_min)}, {fmt(info_.normalized_max)})",
    )
    if "version" in info_.recipe:
        table.add_row("recipe", f"{info_.recipe.get('name')} (version {info_.recipe['version']})")
    for p in info_.recipe.get("parts", []):
        spread = p.get("action_spread")  # builds before action spreads were recorded lack it
        taken = (
            f"; per-state action std {spread['taken_std_mean']:.2f} taken, "
            f"{spread['own_std_mean']:.2f} own"
            if spread and spread.get("own_std_mean") is not None
            else ""
        )
        table.add_row(
            f"part {p['policy']}",
            f"{'stochastic' if p['stochastic'] else 'deterministic'}, noise {p['noise']}, "
            f"{p['transitions']} transitions, {p['episodes']} episodes, seeds from "
            f"{p['first_seed']}{taken}",
        )
    Console().print(table)
