"""`ewfm verify-theorems`: run the numerical checks of the paper's results (ewfm.theory)."""

import json
import sys

import typer

from ._common import fail


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
        False,
        "--trained",
        help="Also train small networks (efm, ed and qfm losses; run times in docs/theory.md).",
    ),
    json_out: str | None = typer.Option(
        None, "--json", help="Write the results as JSON to PATH ('-' for stdout)."
    ),
) -> None:
    """Check every identity of the paper numerically against exact answers (float64).

    Prints one row per check, with what it tests under its name: "library" (a library
    function is the checked ingredient) or "paper maths" (an exact reference formula, with
    library code around it). Exits 0 if every check passed, 1 otherwise.
    """
    from ewfm.theory import run_checks, select_checks

    # --only given (even as "" or ","): exactly the names listed, which must not be none
    names = None if only is None else [n.strip() for item in only for n in item.split(",")]
    try:
        selected = select_checks(
            None if names is None else [n for n in names if n], trained=trained
        )
    except ValueError as e:
        fail(str(e))

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

        results = run_checks(selected, on_start=on_start, on_result=on_result)

    table = Table(title="ewfm verify-theorems")
    table.add_column("check", no_wrap=True)
    table.add_column("statement", overflow="fold")
    for col in ("max error", "tolerance"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("pass/fail", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    for r in results:
        table.add_row(
            f"{r.name}\n({r.subject})",
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
