"""Entry point of the `ewfm` command."""

import typer

app = typer.Typer(
    name="ewfm",
    help="Energy-weighted flow matching and QIPO for offline RL.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the installed ewfm version."""
    import ewfm

    typer.echo(ewfm.__version__)


def main() -> None:
    app()
