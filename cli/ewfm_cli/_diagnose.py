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
    """One row per probe: each number beside the truth's own (its ceiling, its gain, its
    slope)."""
    from rich.table import Table

    t = Table(
        title=f"critic of {result['run']} (seed {result['seed']}, {result['critic']}): "
        f"{result['states']} states x {result['supports']} supports, "
        f"{result['rollouts']} rollouts of {result['horizon']} steps",
        title_justify="left",
    )
    for col in ("probe", "rank corr", "ceiling", "of ceiling", "gain", "truth's gain",
                "of truth's", "|a|^2 slope", "truth's slope"):  # fmt: skip
        t.add_column(col, justify="left" if col == "probe" else "right")
    for name, p in result["probes"].items():
        label = f"{name} (±{result['radius']:g})" if name == "radius" else name
        t.add_row(
            label,
            f"{_num(p['rank_corr'])} ± {_num(p['rank_corr_se'])}",
            _num(p["ceiling"]),
            _num(p["rank_fraction"]),
            f"{_num(p['gain_critic'], '.3g')} ± {_num(p['gain_critic_se'], '.2g')}",
            f"{_num(p['gain_truth'], '.3g')} ± {_num(p['gain_truth_se'], '.2g')}",
            _num(p["gain_fraction"]),
            _num(p["slope_critic"], "+.3g"),
            _num(p["slope_truth"], "+.3g"),
        )
    return t


@app.command("critic")
def critic_command(
    run: Path = typer.Argument(..., help="a run directory made by `ewfm train` (not bc)"),
    seed: int = typer.Option(0, help="which seed of a --seeds K run (0-based)"),
    states: int = typer.Option(32, help="random dataset states to probe"),
    supports: int | None = typer.Option(
        None, help="support actions per state (M) [default: the run's support]"
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
        None, help="report file [default: RUN/diagnose_critic.json; .png and .npz beside it]"
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
        "rank corr: mean within-state Spearman of Q with the true value; ceiling: what a "
        "critic equal to the true expected Q would score against these rollouts; gain: true "
        f"value gained by QIPO's weights (beta {result['beta']:g}, q_norm {result['q_norm']}) "
        "over the supports' mean; truth's gain: weights from half the rollouts scored on the "
        "other half."
    )
    plot = f", {result['plot']}" if result.get("plot") else ""
    where = out or Path(run) / "diagnose_critic.json"
    typer.echo(f"[{result['seconds']:.0f} s; {where}{plot}]")
