"""`ewfm verify-theorems`: run the numerical checks of the paper's results (ewfm.theory)."""

import json
import sys

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _write_json(target: str, records: list[dict]) -> None:
    text = json.dumps(records, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return
    from ewfm._experiment import write_text_atomic

    write_text_atomic(target, text)


def verify_theorems(
    only: list[str] | None = typer.Option(
        None,
        "--only",
        help="Run only these checks (repeat the option or separate names by commas).",
    ),
    trained: bool = typer.Option(
        False, "--trained", help="Also train small networks (efm, ed, qfm losses; ~3 min)."
    ),
    json_out: str | None = typer.Option(
        None, "--json", help="Write the results as JSON to PATH ('-' for stdout)."
    ),
) -> None:
    """Check every identity of the paper numerically against exact answers (float64).

    Prints one row per check; exits 0 if every check passed, 1 otherwise.
    """
    from ewfm.theory import CHECKS, check_names, run_checks

    names: list[str] | None = None
    if only:
        names = [n.strip() for item in only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in CHECKS]
        if unknown:
            _fail(f"unknown check {', '.join(unknown)}; valid: {', '.join(CHECKS)}.")
    else:
        names = check_names(trained=trained)

    from rich.console import Console
    from rich.table import Table

    # with --json - the table goes to stderr, so stdout is pure JSON
    console = Console(stderr=json_out == "-")
    results = []
    with console.status("") as status:

        def on_start(check):
            status.update(f"running {check.name} ...")

        def on_result(res):
            mark = "[green]pass[/green]" if res.passed else "[red]FAIL[/red]"
            console.log(f"{res.name}: {mark} (max error {res.max_error:.2e}, {res.seconds:.1f} s)")

        results = run_checks(names, on_start=on_start, on_result=on_result)

    table = Table(title="ewfm verify-theorems")
    table.add_column("check")
    table.add_column("statement", overflow="fold")
    for col in ("max error", "tolerance"):
        table.add_column(col, justify="right")
    table.add_column("pass/fail")
    table.add_column("seconds", justify="right")
    for r in results:
        table.add_row(
            r.name,
            r.statement,
            f"{r.max_error:.2e}",
            f"{r.tolerance:.0e}",
            "[green]pass[/green]" if r.passed else "[red]FAIL[/red]",
            f"{r.seconds:.1f}",
        )
    console.print(table)
    if json_out is not None:
        _write_json(json_out, [r.to_dict() for r in results])
    failed = [r.name for r in results if not r.passed]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed: {', '.join(failed)}[/red]")
        raise typer.Exit(1)
    console.print(f"[green]all {len(results)} checks passed[/green]")
