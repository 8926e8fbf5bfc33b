"""Lazy imports of the optional ``[rl]`` extra (gymnasium + MuJoCo, Minari), one-line errors."""

import functools
from types import ModuleType

INSTALL_HINT = "pip install 'ewfm[rl]'"


class MissingExtraError(ImportError):
    """An optional dependency of ``ewfm.rl`` is not installed; the message names the pip command."""


def _import(name: str) -> ModuleType:
    try:
        return __import__(name)
    except ImportError as e:
        raise MissingExtraError(
            f"ewfm.rl needs the [rl] extra ({e.name or name} is missing): {INSTALL_HINT}"
        ) from None


@functools.cache
def gymnasium() -> ModuleType:
    """``gymnasium`` with its MuJoCo environments importable."""
    gym = _import("gymnasium")
    mujoco = _import("mujoco")
    from ._env_worker import mujoco_warning

    mujoco.set_mju_user_warning(mujoco_warning)
    return gym


@functools.cache
def minari() -> ModuleType:
    """``minari`` (with HDF5 storage)."""
    m = _import("minari")
    _import("h5py")
    return m
