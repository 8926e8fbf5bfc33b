"""Numbers in README.md come from benchmarks/results/, through benchmarks/report.py.

Two guards: every generated block equals what `report.py` makes from the results files
today, and README prose outside those blocks holds no measured number (a decimal, or a
figure with a unit), so a typed number cannot slip back in. Every results file must say
how it was made (command, commit, load, date).
"""

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


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")))
def test_every_results_file_says_how_it_was_made(path):
    data = json.loads(path.read_text())
    records = data.values() if "provenance" not in data else [data]
    for rec in records:
        prov = rec["provenance"]
        for key in ("command", "commit", "loadavg", "date"):
            assert key in prov, f"{path.name}: provenance lacks {key}"
        assert prov["command"].startswith("python benchmarks/"), prov["command"]
