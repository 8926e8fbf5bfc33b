"""`ewfm verify-theorems`: table, --only, --json schema, exit codes, bad names."""

import json

import pytest
from ewfm_cli.main import app
from typer.testing import CliRunner

from ewfm.theory import CHECKS, Check, Outcome

KEYS = {"name", "statement", "subject", "max_error", "tolerance", "passed", "seconds"}


@pytest.fixture
def fake_checks(monkeypatch):
    """Two instant checks (one passes, one fails) so the CLI tests compile nothing."""

    def good(*, tolerance):
        return Outcome({"a": 1e-9, "b": 2e-9})

    def bad(*, tolerance):
        return Outcome({"a": 0.5})

    def broken(*, tolerance):
        return Outcome({"a": float("nan")})

    for name, fn in (("fake-pass", good), ("fake-fail", bad), ("fake-nan", broken)):
        monkeypatch.setitem(CHECKS, name, Check(name, f"{name} statement", 1e-6, fn))


def test_json_to_stdout_schema_and_exit_0(fake_checks):
    res = CliRunner().invoke(app, ["verify-theorems", "--only", "fake-pass", "--json", "-"])
    assert res.exit_code == 0, res.output
    records = json.loads(res.stdout)
    assert [r["name"] for r in records] == ["fake-pass"]
    (r,) = records
    assert set(r) == KEYS
    assert r["max_error"] == pytest.approx(2e-9) and r["passed"] is True
    assert r["subject"] == "library"
    assert r["tolerance"] == 1e-6 and r["seconds"] >= 0


def test_failure_gives_exit_1_and_json_file(fake_checks, tmp_path):
    out = tmp_path / "sub" / "res.json"
    res = CliRunner().invoke(
        app,
        [
            "verify-theorems",
            "--only",
            "fake-pass,fake-fail",
            "--only",
            "fake-nan",
            "--json",
            str(out),
        ],
    )
    assert res.exit_code == 1, res.output
    records = json.loads(out.read_text())
    assert [r["name"] for r in records] == ["fake-pass", "fake-fail", "fake-nan"]
    assert [r["passed"] for r in records] == [True, False, False]
    assert records[2]["max_error"] is None  # NaN is not JSON: written as null
    assert "fake-fail" in res.output and "FAIL" in res.output


def test_table_lists_each_check(fake_checks):
    res = CliRunner().invoke(app, ["verify-theorems", "--only", "fake-pass"])
    assert res.exit_code == 0
    for col in ("check", "statement", "max error", "tolerance", "pass/fail", "seconds"):
        assert col in res.output
    assert "fake-pass" in res.output and "2.00e-09" in res.output
    assert "(library)" in res.output  # what the check tests, under its name


def test_unknown_name_is_a_one_line_error():
    res = CliRunner().invoke(app, ["verify-theorems", "--only", "lemma-3.2,lemma-9.9"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "lemma-9.9" in lines[0] and "valid:" in lines[0]
    assert "theorem-4.3" in lines[0] and "Traceback" not in res.output


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_an_empty_only_is_a_one_line_error(only, fake_checks):
    # it used to run nothing, print "all 0 checks passed" and exit 0
    res = CliRunner().invoke(app, ["verify-theorems", "--only", only, "--json", "-"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no check selected"), lines
    assert "fake-pass" in lines[0] and "passed" not in res.output


def test_a_real_check_through_the_cli():
    res = CliRunner().invoke(app, ["verify-theorems", "--only", "energy-weights", "--json", "-"])
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout)
    assert r["name"] == "energy-weights" and r["passed"] and r["max_error"] < 1e-12
