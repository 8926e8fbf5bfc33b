"""Numbers in README.md and docs/ come from benchmarks/results/, through benchmarks/report.py.

Three guards: every generated block equals what `report.py` makes from the results files
today; README prose outside those blocks holds no measured number (a decimal, or a figure
with a unit), so a typed number cannot slip back in; and every decimal (and every whole
number of seconds or minutes) in the prose of a docs page equals, at its shown precision, a
value in some results file, so a number with nothing behind it fails. Every results file
must say how it was made (command, commit, load, date).
"""

import bisect
import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402

# a decimal number, or an integer with a unit of time, speed, size or ratio
MEASURED = re.compile(
    r"(?<![\w.\-/])(\d+\.\d+|\d[\d,]*\s?(ms|s|min|minutes|seconds|h|%|×|GFLOP/s|steps/s|MB|GB)\b)"
)


def _prose(text: str) -> str:
    """README text outside report blocks, fenced code, inline code and link targets."""
    text = report.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    # references, not measurements: equation numbers and licence versions
    text = re.sub(r"(eqs?\.|Lemma|Theorem|Corollary|Algorithm|Remark|CC-BY)\s*[\d./]+", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_report_blocks_match_the_results_files():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_report_check_fails_on_a_typed_number(tmp_path, monkeypatch):
    """The check is able to fail: a hand-edited number inside a block is caught."""
    readme = (ROOT / "README.md").read_text()
    m = report.BLOCK.search(readme)
    assert m is not None, "README.md has no report block"
    edited = readme.replace(m.group(3), m.group(3).replace("|", "| 99.9", 1), 1)
    assert report.render(edited, "README.md") != edited
    assert report.render(readme, "README.md") == readme


def test_readme_prose_has_no_typed_measurements():
    hits = MEASURED.findall(_prose((ROOT / "README.md").read_text()))
    assert not hits, f"numbers typed into README prose (put them in a report block): {hits}"


def test_the_guard_sees_typed_numbers():
    assert MEASURED.search(_prose("QIPO-OT scored 59.5 on hopper"))
    assert MEASURED.search(_prose("the build took 282 s"))
    assert not MEASURED.search(_prose("run `ewfm train --seeds 3` for 3 seeds"))


# -- docs pages: every decimal in prose is a value of some results file ------------------------

# Pages the number guard skips, each with its reason. Shrink this set; never grow it to pass.
DOCS_UNGUARDED = {
    "method.md": "the paper's equations, no measurements",
    "contributing.md": "how to work on the package, no measurements",
    "api.md": "generated from docstrings",
}
DOCS_GUARDED = sorted(
    p for p in (ROOT / "docs").glob("*.md") if p.name not in DOCS_UNGUARDED
)  # fmt: skip

# references, not measurements: equation, section and licence numbers, versions
REFERENCE = re.compile(
    r"(\beqs?\.|\bEqs?\.|Lemmas?|Theorems?|Corollary|Corollaries|Algorithms?|Remark|Section|"
    r"§|CC-BY|Python|\bv(?=\d))\s*\(?\d+(\.\d+)*\)?(\s*(,|and|–|-|/)\s*\(?\d+(\.\d+)*\)?)*"
)
# a decimal number with its sign ("−" or "-" right before it) and an optional percent sign;
# not part of a word or of a dotted version such as 0.10.2
DECIMAL = re.compile(r"(?<![\w.])([−+-]?)(\d[\d,]*\.\d+)(?!\.?\d)(\s?%)?")
# a whole number of seconds or minutes: a measured time as well
TIME = re.compile(r"(?<![\w.,])(\d[\d,]*)\s?(ms|s|min|minutes|seconds|CPU-s)\b")


def _doc_prose(text: str) -> str:
    """Docs text outside report blocks, code, math, link targets and references."""
    text = report.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return REFERENCE.sub("", text)


@functools.cache
def _result_values() -> list[float]:
    """Every number in benchmarks/results/*.json (nested anywhere)."""
    out: list[float] = []

    def walk(o: object) -> None:
        if isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, int | float) and not isinstance(o, bool):
            out.append(float(o))

    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        walk(json.loads(path.read_text()))
    return out


def _on_file(shown: float, decimals: int, values: list[float]) -> bool:
    """Some value of the sorted ``values`` rounds to ``shown`` at ``decimals`` places."""
    half = 0.5 * 10.0**-decimals * (1 + 1e-9)
    i = bisect.bisect_left(values, shown - half)
    return i < len(values) and values[i] <= shown + half


def unbacked(text: str, values: list[float]) -> list[str]:
    """The decimals and whole times (``282 s``) in ``text``'s prose that no results value
    rounds to (a percentage may also be a fraction on file)."""
    values = sorted(values)
    bad = []
    for m in DECIMAL.finditer(_doc_prose(text)):
        sign, digits, percent = m.groups()
        shown = float(digits.replace(",", "")) * (-1.0 if sign in ("−", "-") else 1.0)
        places = len(digits.split(".")[1])
        ok = _on_file(shown, places, values) or (
            bool(percent) and _on_file(shown / 100, places + 2, values)
        )
        if not ok:
            bad.append(m.group(0).strip())
    for m in TIME.finditer(_doc_prose(text)):
        if not _on_file(float(m.group(1).replace(",", "")), 0, values):
            bad.append(m.group(0))
    return bad


@pytest.mark.parametrize("page", DOCS_GUARDED, ids=lambda p: p.name)
def test_docs_numbers_come_from_results_files(page):
    bad = unbacked(page.read_text(), _result_values())
    assert not bad, (
        f"docs/{page.name}: numbers in prose that no file in benchmarks/results/ holds (put "
        f"them in a report block, name their results file, or remove them): {bad}"
    )


def test_the_docs_guard_sees_numbers_with_nothing_behind_them():
    values = [0.5094651322033315, -1.2229247458193144, 203.079427, 0.09]
    # a made-up number fails; the same text with numbers on file passes
    assert unbacked("EFM reached 0.517 at beta 0 (z +0.4).", values) == ["0.517", "+0.4"]
    assert unbacked("EFM reached 0.509 at beta 0 (z −1.2; 203.1 CPU-s).", values) == []
    assert unbacked("the sign counts: z 1.2", values) == ["1.2"]
    assert unbacked("precision counts: 0.5095 vs 0.5094", values) == ["0.5094"]
    assert unbacked("a share of 9.0% is a fraction on file", values) == []
    assert unbacked("training took 203 CPU-s, the build 282 s", values) == ["282 s"]
    # numbers that are not measurements are skipped
    skipped = (
        "eq. (4.3), Theorem 4.1, 4.3, Lemma 3.2, §6.2, CC-BY 4.0, jax 0.10.2, `lr = 0.123`, "
        "$x^{0.77}$, [link](https://x.org/1.5), ```\n0.333\n```, "
        "<!-- report:x -->\n0.444\n<!-- /report:x -->"
    )
    assert unbacked(skipped, values) == []


def test_every_unguarded_page_exists():
    """A renamed page must not drop out of the guard through a stale exclusion."""
    for name in DOCS_UNGUARDED:
        assert (ROOT / "docs" / name).exists(), name


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")))
def test_every_results_file_says_how_it_was_made(path):
    data = json.loads(path.read_text())
    records = data.values() if "provenance" not in data else [data]
    for rec in records:
        prov = rec["provenance"]
        for key in ("command", "commit", "loadavg", "date"):
            assert key in prov, f"{path.name}: provenance lacks {key}"
        assert prov["command"].startswith("python benchmarks/"), prov["command"]
