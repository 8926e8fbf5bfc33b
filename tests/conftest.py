"""Test configuration: run-time shape checking (jaxtyping + beartype) for the whole package."""

import os

os.environ.setdefault("EWFM_TYPECHECK", "1")

import jax
import pytest


@pytest.fixture
def x64():
    """Run a test with 64-bit floats (exact identities)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A 1,500-step hopper-medium build in a private Minari directory (one per test module;
    the environment variable is restored after the module)."""
    from ewfm.rl import ensure_dataset

    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        ensure_dataset("hopper-medium", steps=1500, progress=False)
        yield "hopper-medium"
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
