"""What every command shares: one `fail`, config classes read without JAX, and flags
generated from a config dataclass (help, choices and default declared once, on its fields).
"""

import importlib
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

_LIGHT = "_ewfm_light"


def fail(msg: str) -> NoReturn:
    """Print ``error: msg`` in red on stderr and exit with status 2 (bad input)."""
    text = str(msg)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # a KeyError's repr
        text = text[1:-1]
    typer.secho(f"error: {text}", err=True, fg="red")
    raise typer.Exit(2)


def light_module(name: str) -> types.ModuleType:
    """The stdlib-only module ``ewfm.<name>`` (e.g. ``"rl._config"``), loaded WITHOUT running
    ``ewfm/__init__`` (which imports JAX), so that ``ewfm --help`` and flag generation stay fast.

    The module is loaded under a shadow package whose subpackages are empty shells; its
    relative imports (``from .._experiment import ...``) resolve to the same files. The
    classes it defines are copies: use them for names, defaults, help and choices only, and
    pass plain values to the real library.
    """
    spec = importlib.util.find_spec("ewfm")
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    parts = name.split(".")
    for i in range(len(parts)):
        pkg = ".".join([_LIGHT, *parts[:i]])
        if pkg not in sys.modules:
            shell = types.ModuleType(pkg)
            shell.__path__ = [str(root.joinpath(*parts[:i]))]
            sys.modules[pkg] = shell
    return importlib.import_module(f"{_LIGHT}.{name}")


def _experiment() -> types.ModuleType:
    return light_module("_experiment")


def _help(info: Any, preset_note: str) -> str:
    text = info.help.rstrip(".")
    if info.choices:
        if isinstance(info.choices, dict):
            text += ". Choices: " + "; ".join(f"{k}: {v}" for k, v in info.choices.items())
        else:
            text += ". Choices: " + ", ".join(str(c) for c in info.choices)
    default = info.default
    if isinstance(default, tuple):
        default = ",".join(str(x) for x in default)
    shown = "true" if default is True else "false" if default is False else default
    return f"{text} \\[default: {shown}{preset_note}]"  # escaped: rich markup eats [..]


def config_options(
    cls: type, *, first: Sequence[str] = (), skip: Iterable[str] = (), preset_note: str = ""
) -> list[inspect.Parameter]:
    """One keyword-only Typer option per CLI field of the config dataclass ``cls``.

    Every option defaults to ``None`` ("not given"), so the library's own precedence
    (preset -> TOML -> flags) decides; bools take true/false, tuples a comma list.
    ``first`` lists the fields shown first in ``--help``.
    """
    infos = _experiment().field_info(cls)
    names = [n for n in first if n in infos] + [n for n in infos if n not in first]
    params = []
    for name in names:
        info = infos[name]
        if name in set(skip) or not info.cli:
            continue
        ann: Any = info.kind if info.kind in (int, float) else str
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    None, info.flag, help=_help(info, preset_note), show_default=False
                ),
                annotation=Optional[ann],  # noqa: UP045 (typer reads the annotation)
            )
        )
    return params


def preset_summary(presets: dict[str, dict[str, Any]]) -> str:
    """``name: key value, ...; name: ...`` for a ``--preset`` flag's help."""
    return "; ".join(
        f"{name}: " + (", ".join(f"{k} {v}" for k, v in over.items()) or "the defaults below")
        for name, over in presets.items()
    )


def option(name: str, default: Any, *flags: str, help: str, annotation: Any) -> inspect.Parameter:
    """A hand-written keyword-only option (``--out``, ``--resume``, ...)."""
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(default, *flags, help=help),
        annotation=annotation,
    )


def with_signature(fn: Callable[..., Any], params: Sequence[inspect.Parameter]) -> Callable:
    """``fn(**kwargs)`` exposed to Typer with ``params`` as its signature."""
    fn.__signature__ = inspect.Signature(list(params))  # type: ignore[attr-defined]
    return fn


def given(kwargs: dict[str, Any], cls: type) -> dict[str, Any]:
    """The config-field options the user gave (not ``None``), popped out of ``kwargs``."""
    names = set(_experiment().field_info(cls))
    popped = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    return {k: v for k, v in popped.items() if v is not None}
