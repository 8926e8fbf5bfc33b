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


from ._train import evaluate_command, train_command  # noqa: E402

app.command("train")(train_command)
app.command("evaluate")(evaluate_command)

from ._diagnose import app as diagnose_app  # noqa: E402

app.add_typer(diagnose_app, name="diagnose")

from ._data import app as data_app  # noqa: E402

app.add_typer(data_app, name="data")

from ._toy import app as toy_app  # noqa: E402

app.add_typer(toy_app, name="toy")

from ._images import app as images_app  # noqa: E402

app.add_typer(images_app, name="images")

from ._theory import verify_theorems  # noqa: E402

app.command("verify-theorems")(verify_theorems)


def main() -> None:
    app()
