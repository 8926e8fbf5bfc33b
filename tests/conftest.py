"""Test configuration: run-time shape checking (jaxtyping + beartype) for the whole package."""

import os

os.environ.setdefault("EWFM_TYPECHECK", "1")
