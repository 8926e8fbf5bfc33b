"""Provenance for benchmark results: every file in benchmarks/results/ says how it was made.

`provenance()` records the command line, the git commit (with a ``-dirty`` mark when the
tree had uncommitted changes), the machine's load average, the date and the CPU, so a
number in the README can be traced to the run that produced it. `write_result` stores a
record atomically with that provenance under the key ``"provenance"``.
"""

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=RESULTS.parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """How this result is being made: command, commit, load, date, machine."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(argv[0], RESULTS.parent.parent) if argv else "?"
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += "-dirty"
    return {
        "command": "python " + shlex.join([script, *argv[1:]]),
        "commit": commit or None,
        "loadavg": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def _write_atomic(path: Path, obj: Any) -> None:
    """JSON to ``path`` through a temporary file and a rename (never half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(obj, indent=2, allow_nan=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_result(name: str, record: dict[str, Any], *, merge_key: str | None = None) -> Path:
    """Write ``record`` (plus its provenance) to ``benchmarks/results/<name>.json``.

    With ``merge_key`` the file holds several named records and only that one is replaced.
    """
    path = RESULTS / f"{name}.json"
    rec = {**record, "provenance": provenance()}
    if merge_key is None:
        out: Any = rec
    else:
        out = json.loads(path.read_text()) if path.exists() else {}
        out[merge_key] = rec
    _write_atomic(path, out)
    return path
