"""Lazy imports of the optional ``[rl]`` extra (gymnasium + MuJoCo, Minari), one-line errors."""

import functools
import warnings
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


def _mujoco_warning(message: str) -> None:
    # MuJoCo >= 4 warns (to stderr and ./MUJOCO_LOG.TXT) about the deprecated
    # 'settotalmass' attribute of Gymnasium's HalfCheetah XML at every model load.
    # It is harmless there; anything else is forwarded as a Python warning.
    if "settotalmass" not in message:
        warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


@functools.cache
def gymnasium() -> ModuleType:
    """``gymnasium`` with its MuJoCo environments importable."""
    gym = _import("gymnasium")
    mujoco = _import("mujoco")
    mujoco.set_mju_user_warning(_mujoco_warning)
    return gym


@functools.cache
def minari() -> ModuleType:
    """``minari`` (with HDF5 storage)."""
    m = _import("minari")
    _import("h5py")
    return m
