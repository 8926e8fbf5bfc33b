"""Developer sessions: `nox -s tests lint typecheck docs bench`."""

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, exactly as CI runs it (runtime shape checking on)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "-n", "2", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", "ewfm", "cli", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "ewfm", "cli", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright on the library and the CLI."""
    session.install("-e", ".[dev]")
    session.run("pyright")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks (write JSON into benchmarks/results/)."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/core.py", *session.posargs)
