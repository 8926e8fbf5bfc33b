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
