"""Packaging: the public API is importable, `import ewfm` stays light, the CLI starts fast."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import ewfm

PUBLIC = [
    "AbstractPath",
    "OTPath",
    "VPPath",
    "PathSample",
    "energy_weights",
    "grouped_energy_weights",
    "cfm_loss",
    "efm_loss",
    "denoising_loss",
    "ed_loss",
    "qfm_loss",
    "qd_loss",
    "cep_loss",
    "FourierTimeEmbedding",
    "MLPField",
    "ResidualMLPField",
    "TwinQ",
    "EnergyNet",
    "sample",
    "integrate",
    "SampleResult",
    "CFGField",
    "EnergyGuidedField",
    "fit",
    "make_epoch",
    "TrainState",
    "save_checkpoint",
    "load_checkpoint",
]


def test_public_names():
    missing = [n for n in PUBLIC if not hasattr(ewfm, n)]
    assert not missing


@pytest.mark.parametrize("module", ["ewfm", "ewfm.rl"])
def test_import_is_light(module):
    """The optional extras load when used, not on import (ewfm.rl included)."""
    code = (
        f"import sys, {module}; heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('gymnasium', 'minari', 'matplotlib', 'mujoco', 'h5py')]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_root_and_version():
    from ewfm_cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "train" in res.output
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 0 and res.output.strip() == ewfm.__version__


def test_cli_starts_without_jax():
    # `ewfm --help` and flag generation read the stdlib-only config modules; JAX (seconds to
    # import) is loaded only by a command that runs.
    code = (
        "import sys, ewfm_cli.main; heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('jax', 'jaxlib', 'equinox', 'ewfm')]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
