"""`ewfm diagnose critic RUN`: a thin wrapper around `ewfm.rl.diagnose_critic`, which does
every check and writes the report; this module prints it as a table."""

from pathlib import Path
from typing import Any

import typer

from ._common import fail

app = typer.Typer(
    help="Check what a trained run has learnt, against the simulator.", no_args_is_help=True
)


def _num(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None or x != x else format(x, fmt)


def _table(result: dict[str, Any]) -> Any:
    """One column per probe, one row per number; each beside the truth's own (its ceiling,
    its gain, its slope)."""
    from rich.table import Table

    t = Table(
        title=f"critic of {result['run']} (seed {result['seed']}, {result['critic']}): "
        f"{result['states']} states x {result['supports']} supports, "
        f"{result['rollouts']} rollouts of {result['horizon']} steps",
        title_justify="left",
    )
    t.add_column("")
    probes = result["probes"]
    for name in probes:
        t.add_column(f"{name} ±{result['radius']:g}" if name == "radius" else name, justify="right")

    def pm(key: str, fmt: str, se_fmt: str) -> Any:
        return lambda p: f"{_num(p[key], fmt)} ± {_num(p[key + '_se'], se_fmt)}"

    def one(key: str, fmt: str = ".2f") -> Any:
        return lambda p: _num(p[key], fmt)

    rows = (
        ("rank corr with the truth", pm("rank_corr", "+.3f", ".3f")),
        ("ceiling (the truth's noise)", one("ceiling", ".3f")),
        ("rank corr / ceiling", one("rank_fraction")),
        ("gain of the critic's weights", pm("gain_critic", "+.3g", ".2g")),
        ("gain of the truth's weights", pm("gain_truth", "+.3g", ".2g")),
        ("gain / truth's gain", one("gain_fraction")),
        ("slope on |a|^2: critic", one("slope_critic", "+.3g")),
        ("slope on |a|^2: truth", one("slope_truth", "+.3g")),
        ("spread within state: critic", one("spread_critic", ".3g")),
        ("spread within state: truth", one("spread_truth", ".3g")),
    )
    for label, cell in rows:
        t.add_row(label, *(cell(p) for p in probes.values()))
    return t


@app.command("critic")
def critic_command(
    run: Path = typer.Argument(..., help="a run directory made by `ewfm train` (not bc)"),
    seed: int = typer.Option(0, help="which seed of a --seeds K run (0-based)"),
    states: int = typer.Option(32, help="random dataset states to probe"),
    supports: int | None = typer.Option(
        None, help="support actions per state (M) \\[default: the run's support]"
    ),
    rollouts: int = typer.Option(
        8, help="stochastic continuations per support (K >= 2; the truth is their mean)"
    ),
    horizon: int = typer.Option(
        200, help="environment steps of each continuation (discounted with the run's gamma)"
    ),
    radius: float = typer.Option(
        0.3, help="the wider probe: uniform offsets of at most this per action dimension"
    ),
    out: Path | None = typer.Option(
        None, help="report file \\[default: RUN/diagnose_critic.json; .png and .npz beside it]"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Does the critic rank a state's actions as their true values do?

    For random dataset states, Q of M support actions is compared with their expected
    return (K rollouts of the dataset's own behaviour policy in the simulator, with common
    random numbers) at two scales: the behaviour model's own supports and supports spread
    by +-radius. Every number stands beside the truth's own: its noise ceiling, its gain
    and its slope on ||a||^2.
    """
    import ewfm.rl as rl

    try:
        result = rl.diagnose_critic(
            run, seed=seed, states=states, supports=supports, rollouts=rollouts,
            horizon=horizon, radius=radius, out=out, progress=not quiet,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, rl.MissingExtraError) as e:
        fail(str(e))
    from rich.console import Console

    console = Console()
    console.print(_table(result))
    console.print(
        "rank corr: mean within-state Spearman correlation of Q with the true value (± its "
        "standard error over states); ceiling: what a critic equal to the true expected Q "
        "would score against these rollouts; gain: true value gained over the supports' mean "
        f"by QIPO's weights (beta {result['beta']:g}, q_norm {result['q_norm']}) and by the "
        "truth's own (chosen on half the rollouts, scored on the other half); share: critic "
        "over truth; slope: within-state slope of Q on ||a||^2.",
        highlight=False,
    )
    plot = f", {result['plot']}" if result.get("plot") else ""
    where = out or Path(run) / "diagnose_critic.json"
    typer.echo(f"[{result['seconds']:.0f} s; {where}{plot}]")
