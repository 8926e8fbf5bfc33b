"""One-line errors for a name that must be one of a fixed set (methods, data sets, ...)."""

from collections.abc import Collection


def check_choice(name: str, choices: Collection[str], what: str) -> str:
    """Return ``name`` if it is in ``choices``, else raise a one-line `ValueError`:
    ``unknown {what} 'name'; choose one of a, b, c.``"""
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(choices)}.")
    return name
