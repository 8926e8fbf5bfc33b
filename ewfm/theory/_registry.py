"""Check records and the registry that `ewfm verify-theorems` runs."""

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax

from .._experiment import ConfigError

SUBJECTS = ("library", "paper maths")
"""What a check tests. ``library``: the checked ingredient (the function a broken twin
replaces) is library code, so a bug there fails the check. ``paper maths``: the checked
formula is an exact reference of `ewfm.theory` (e.g. the guided velocity of Theorem 4.1 in
closed form); library code (paths, sampler, guided fields) runs around it, but the check
verifies the paper's mathematics, not a library function that computes it."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What one check measured.

    Attributes:
        name: registry name, e.g. ``"lemma-3.2"``.
        statement: the result being checked, in one line.
        subject: ``"library"`` or ``"paper maths"`` (see `SUBJECTS`).
        max_error: the largest error over all of the check's cases (NaN if a case produced
            a non-finite value).
        tolerance: ``passed`` needs ``max_error <= tolerance``.
        passed: whether the check holds.
        seconds: wall-clock time of the check, compilation included.
        errors: the error of every case (path, data set, quantity).
        info: measured quantities that are not errors (e.g. how far CFG misses a target).
    """

    name: str
    statement: str
    subject: str
    max_error: float
    tolerance: float
    passed: bool
    seconds: float
    errors: dict[str, float] = dataclasses.field(default_factory=dict)
    info: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record ``{name, statement, subject, max_error, tolerance, passed, seconds}``.

        A non-finite ``max_error`` is written as ``null`` (JSON has no NaN).
        """
        err = self.max_error if math.isfinite(self.max_error) else None
        return {
            "name": self.name,
            "statement": self.statement,
            "subject": self.subject,
            "max_error": err,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "seconds": self.seconds,
        }


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a check function returns: errors per case, extra measurements, extra conditions."""

    errors: dict[str, float]
    info: dict[str, float] = dataclasses.field(default_factory=dict)
    ok: bool = True


@dataclasses.dataclass(frozen=True)
class Check:
    """A registered check: call it (optionally with replacement ingredients) to run it.

    Every check runs in float64. Keyword arguments replace the check's ingredients (the
    library functions it tests), which is how the tests show that each check can fail.
    """

    name: str
    statement: str
    tolerance: float
    fn: Callable[..., Outcome]
    trained: bool = False
    subject: str = "library"

    def __post_init__(self):
        if self.subject not in SUBJECTS:
            raise ValueError(f"subject must be one of {SUBJECTS}, got {self.subject!r}.")

    def __call__(self, **ingredients: Any) -> CheckResult:
        t0 = time.perf_counter()
        with jax.enable_x64(True):
            out = self.fn(tolerance=self.tolerance, **ingredients)
        seconds = time.perf_counter() - t0
        errors = {k: float(v) for k, v in out.errors.items()}
        vals = list(errors.values())
        max_error = math.nan if any(not math.isfinite(v) for v in vals) else max(vals)
        passed = bool(out.ok and math.isfinite(max_error) and max_error <= self.tolerance)
        return CheckResult(
            name=self.name,
            statement=self.statement,
            subject=self.subject,
            max_error=max_error,
            tolerance=self.tolerance,
            passed=passed,
            seconds=seconds,
            errors=errors,
            info={k: float(v) for k, v in out.info.items()},
        )


CHECKS: dict[str, Check] = {}
"""All checks by name, in the paper's order (docs/method.md; the exact ones first, then the
trained)."""


def register(
    name: str,
    statement: str,
    tolerance: float,
    *,
    trained: bool = False,
    subject: str = "library",
) -> Callable[[Callable[..., Outcome]], Check]:
    """Decorator adding a check function to `CHECKS`."""

    def wrap(fn: Callable[..., Outcome]) -> Check:
        check = Check(name, statement, tolerance, fn, trained, subject)
        CHECKS[name] = check
        return check

    return wrap


def check_names(*, trained: bool = True) -> list[str]:
    """Names of the registered checks (without the trained ones if ``trained=False``)."""
    return [n for n, c in CHECKS.items() if trained or not c.trained]


def select_checks(names: Iterable[str] | None = None, *, trained: bool = False) -> list[str]:
    """The checks to run: ``names`` as given, or (``None``) every exact check plus the trained
    ones if ``trained``.

    Raises `ConfigError` (a `ValueError`), before anything runs, for an unknown name or an
    empty selection (running nothing would report "all 0 checks passed").
    """
    if names is None:
        return check_names(trained=trained)
    selected = list(names)
    valid = ", ".join(CHECKS)
    if not selected:
        raise ConfigError(f"no check selected; name at least one of: {valid}.")
    unknown = [n for n in selected if n not in CHECKS]
    if unknown:
        raise ConfigError(f"unknown check(s) {', '.join(unknown)}; valid: {valid}.")
    return selected


def run_checks(
    names: Iterable[str] | None = None,
    *,
    trained: bool = False,
    on_start: Callable[[Check], None] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run the named checks (default: every exact check, plus the trained ones if asked).

    The selection is validated first by `select_checks`. ``on_start`` / ``on_result`` are
    called around each check (for progress display).
    """
    results = []
    for n in select_checks(names, trained=trained):
        check = CHECKS[n]
        if on_start is not None:
            on_start(check)
        res = check()
        results.append(res)
        if on_result is not None:
            on_result(res)
    return results
