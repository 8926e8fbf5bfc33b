"""Run plumbing shared by every wing (toy, images, rl): errors, configs, run directories, progress.

One of each, so the wings read alike:

- `ConfigError` (one-line, names the fix), `check_choice`, `MissingExtraError(extra)`;
- `setting`: a dataclass field that carries its help text and its choices, declared once and
  read by validation, by the CLI (every field becomes a flag) and by the docs;
- config I/O that takes the config class: `resolve_config` (preset -> TOML -> overrides),
  `config_to_json` / `config_from_json` (with legacy keys of older run directories);
- `RunDir` (new / resume checks, atomic JSON and metrics) and `Progress` (rich bars).

Stdlib only at import (rich is imported when a bar is shown): the CLI loads the config
classes, and this module, without importing JAX.
"""

import dataclasses
import difflib
import json
import os
import tempfile
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")

# -- errors -------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A bad setting, file or run directory; the message is one line and names the fix."""


def pip_hint(extra: str) -> str:
    """The one form of install hint used everywhere: ``pip install 'ewfm[extra]'``."""
    return f"pip install 'ewfm[{extra}]'"


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message gives the pip command that installs it."""

    def __init__(self, extra: str, what: str, missing: str | None = None):
        self.extra = extra
        detail = f" ({missing} is missing)" if missing else ""
        super().__init__(f"{what} needs the [{extra}] extra{detail}: {pip_hint(extra)}")


def require(module: str, extra: str, what: str) -> types.ModuleType:
    """``import module``, or a `MissingExtraError` naming ``extra``'s pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(extra, what, e.name or module) from None


def check_choice(name: Any, choices: Sequence[Any] | Mapping[Any, Any], what: str) -> Any:
    """Return ``name`` if it is one of ``choices``, else a one-line `ConfigError`:
    ``unknown {what} 'name'; choose one of a, b, c.``"""
    if name not in choices:
        names = ", ".join(str(c) for c in choices)
        raise ConfigError(f"unknown {what} {name!r}; choose one of {names}.")
    return name


def closest(key: str, keys: Sequence[str]) -> str:
    """The element of ``keys`` closest to ``key`` (for 'did you mean' hints)."""
    match = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.0)
    return match[0] if match else ""


# -- settings: dataclass fields with their help and choices --------------------------------------


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | Mapping[str, str] | None = None,
    cli: bool = True,
) -> Any:
    """A config field with its help text and (optionally) its choices, declared once.

    ``choices`` may map each choice to a one-line description (shown by ``--help``).
    ``cli=False`` keeps a field out of the generated command-line flags.
    """
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": choices, "cli": cli}
    )


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What the CLI and validation need to know about one config field."""

    name: str
    kind: type  # bool, int, float, str or tuple
    optional: bool  # ``X | None``
    item: type | None  # element type of a tuple field
    default: Any
    help: str
    choices: Sequence[Any] | Mapping[str, str] | None
    cli: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def field_info(cls: type) -> dict[str, FieldInfo]:
    """Every field of the config dataclass ``cls``, with its type, default, help and choices."""
    hints = typing.get_type_hints(cls)
    out: dict[str, FieldInfo] = {}
    for f in dataclasses.fields(cls):
        kind, optional, item = _unpack(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        md = f.metadata
        out[f.name] = FieldInfo(
            f.name, kind, optional, item, default, md.get("help", ""), md.get("choices"),
            md.get("cli", True),
        )  # fmt: skip
    return out


def _unpack(tp: Any) -> tuple[type, bool, type | None]:
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        kind, _, item = _unpack(rest[0])
        return kind, True, item
    if origin is tuple:
        return tuple, False, args[0] if args else str
    return tp, False, None


def coerce(cls: type, key: str, value: Any) -> Any:
    """``value`` converted to the type of field ``key`` of ``cls`` (one-line `ConfigError`)."""
    info = field_info(cls)
    if key not in info:
        raise ConfigError(f"unknown config key {key!r}; did you mean {closest(key, list(info))!r}?")
    f = info[key]
    if value is None or (f.optional and isinstance(value, str) and value.lower() == "none"):
        if f.optional:
            return None
        raise ConfigError(f"{key} must be given a value, got None.")
    return _coerce_one(key, f.kind, f.item, value)


def _coerce_one(key: str, kind: type, item: type | None, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be true or false, got {value!r}.")
    if kind is tuple:
        parts = value.split(",") if isinstance(value, str) else list(value)
        assert item is not None
        return tuple(_coerce_one(key, item, None, p) for p in parts)
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        if kind is int and isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r}.") from None


def check_choices(cfg: Any) -> None:
    """Refuse any field value outside the choices its `setting` declares."""
    for f in field_info(type(cfg)).values():
        value = getattr(cfg, f.name)
        if f.choices is not None and value is not None:
            check_choice(value, f.choices, f.name)


def load_toml(path: str | os.PathLike, section: str | None = None) -> dict[str, Any]:
    """A flat TOML table of config keys; an optional ``[section]`` table also works."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass an existing .toml file.")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}.") from None
    if section is not None and set(data) == {section} and isinstance(data[section], dict):
        data = data[section]
    for k, v in data.items():
        if isinstance(v, dict):
            raise ConfigError(f"config file {p}: nested table [{k}] is not allowed; use flat keys.")
    return data


def resolve_config(
    cls: type[C],
    presets: Mapping[str, Mapping[str, Any]],
    preset: str,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    section: str | None = None,
) -> C:
    """``cls``'s settings: the ``preset``, then the TOML ``config_file``, then ``overrides``
    (``None`` values are ignored). Unknown keys are refused with the closest key named."""
    check_choice(preset, presets, "preset")
    values: dict[str, Any] = dict(presets[preset])
    if config_file is not None:
        values.update(load_toml(config_file, section))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return cls(**{k: coerce(cls, k, v) for k, v in values.items()})


def config_to_json(cfg: Any) -> dict[str, Any]:
    """The config as a JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_from_json(
    cls: type[C],
    data: Mapping[str, Any] | str | os.PathLike,
    legacy: Mapping[str, Any] | None = None,
) -> C:
    """A config read back from `config_to_json`'s dict (or a ``config.json`` path).

    ``legacy`` gives, for keys that older run directories lack, the value those runs used
    (which may differ from today's default).
    """
    values: Mapping[str, Any] = (
        data if isinstance(data, Mapping) else json.loads(Path(data).read_text())
    )
    merged = {**(legacy or {}), **values}
    return cls(**{k: coerce(cls, k, v) for k, v in merged.items()})


# -- run directories ----------------------------------------------------------------------------


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary keeps the target's suffix (so e.g. matplotlib infers the format). On any
    exception, including KeyboardInterrupt, the temporary is removed and ``path`` is left as
    it was. The result is world-readable (``mkstemp`` files are private).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


class RunDir:
    """The files of one run. Every write is atomic (temporary file + rename), so a killed
    run never leaves half a file; `check` refuses to mix two runs in one directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.ckpt = self.root / "checkpoints"

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def stage_path(self, stage: str) -> Path:
        """The checkpoint of a training stage (or of any named tree)."""
        return self.ckpt / f"{stage}.eqx"

    def check(
        self,
        config: Mapping[str, Any],
        *,
        resume: bool = False,
        read: Callable[[Path], Mapping[str, Any]] | None = None,
        command: str = "ewfm",
    ) -> None:
        """Refuse, before any work, a directory this run must not write into.

        New run: ``root`` must be missing or empty. ``resume``: it must hold a run whose
        config (read by ``read``, default plain JSON) equals ``config`` key by key.
        """
        if self.is_run():
            if not resume:
                raise ConfigError(
                    f"{self.root} already holds a run; pass --resume to continue it or "
                    "choose another --out."
                )
            old = (read or (lambda p: json.loads(p.read_text())))(self.config_path)
            for k, v in config.items():
                if old.get(k) != v:
                    raise ConfigError(
                        f"cannot resume {self.root} with {k}={v!r}: it was made with "
                        f"{k}={old.get(k)!r}; drop the option or choose another --out."
                    )
        elif resume:
            raise ConfigError(
                f"{self.root} holds no config.json: nothing to resume; drop --resume."
            )
        elif self.root.exists() and any(self.root.iterdir()):
            raise ConfigError(
                f"{self.root} is not empty and not an ewfm run; choose another --out."
            )

    def require(self, *names: str, hint: str = "") -> None:
        """Refuse a directory that lacks any of the files ``names`` (one line, with ``hint``)."""
        missing = [n for n in names if not (self.root / n).is_file()]
        if missing:
            raise ConfigError(
                f"{self.root} is not a finished run directory (no {', '.join(missing)})"
                + (f"; {hint}" if hint else ".")
            )

    def read_json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

    def write_json(self, name: str, obj: Any) -> None:
        write_json_atomic(self.root / name, obj)

    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.root / name, text)

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.root / "metrics.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []

    def write_metrics(self, history: Sequence[Mapping[str, Any]]) -> None:
        """``metrics.jsonl``: one JSON record per line, rewritten whole (atomically)."""
        self.write_text("metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """Rich progress bars for long work, or nothing at all when ``enabled`` is false.

    Use as a context manager; `task` adds a bar whose `Task.advance` takes named numbers to
    show beside it (``loss=0.12, score=41.0``). With ``log_lines``, when stdout is not a
    terminal (a log file, where a live bar would not render) each bar prints a plain line
    every 5% instead.
    """

    def __init__(self, enabled: bool = True, *, transient: bool = False, log_lines: bool = False):
        self.enabled = enabled
        self._bar: Any = None
        self._transient = transient
        self._log_lines = log_lines

    def __enter__(self) -> "Progress":
        import sys

        if self.enabled and self._log_lines and not sys.stdout.isatty():
            self._bar = _LineBar()  # a log file: a live bar would not render there
        elif self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = RichProgress(
                TextColumn("{task.description:>12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=self._transient,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def task(self, label: str, total: int, completed: int = 0) -> "Task":
        """A bar of ``total`` units, ``completed`` of them already done (a resumed stage)."""
        tid = None
        if self._bar is not None:
            tid = self._bar.add_task(label, total=total, completed=completed, info="")
        return Task(self._bar, tid)


@dataclasses.dataclass
class _Line:
    label: str
    total: int
    done: int
    info: str
    start: float
    first: int
    shown: int = -1


class _LineBar:
    """The part of rich's Progress that `Task` uses, printing a line every 5% of each bar."""

    def __init__(self) -> None:
        self._lines: list[_Line] = []

    def add_task(self, label: str, total: int, completed: int = 0, info: str = "") -> int:
        import time

        self._lines.append(
            _Line(label, max(total, 1), completed, info, time.perf_counter(), completed)
        )
        return len(self._lines) - 1

    def update(self, tid: int, advance: int = 0, **fields: str) -> None:
        import time

        line = self._lines[tid]
        line.done += advance
        line.label = fields.get("description", line.label)
        line.info = fields.get("info", line.info)
        pct = int(20 * line.done / line.total) * 5
        if pct > line.shown:
            line.shown = pct
            rate = (line.done - line.first) / max(time.perf_counter() - line.start, 1e-9)
            info = f"  {line.info}" if line.info else ""
            print(
                f"{line.label}: {line.done}/{line.total} ({pct}%), {rate:.0f}/s{info}", flush=True
            )

    def stop(self) -> None:
        pass


class Task:
    """One bar of a `Progress` (a no-op when progress is off)."""

    def __init__(self, bar: Any, tid: Any):
        self._bar, self._tid = bar, tid

    def advance(self, n: int = 1, **info: float | str | None) -> None:
        if self._bar is not None:
            text = "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in info.items()
                if v is not None
            )
            self._bar.update(self._tid, advance=n, info=text)

    def label(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._tid, description=text)
