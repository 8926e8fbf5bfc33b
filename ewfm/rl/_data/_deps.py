"""The optional ``[rl]`` extra (gymnasium with MuJoCo, Minari), imported when first needed.

A missing package raises the core `MissingExtraError`, whose one-line message gives
``pip install 'ewfm[rl]'``.
"""

from types import ModuleType

from ..._experiment import require
from ._env_worker import mujoco_warning

EXTRA = "rl"
WHAT = "ewfm.rl"


def gymnasium() -> ModuleType:
    """``gymnasium`` with its MuJoCo environments importable."""
    gym = require("gymnasium", EXTRA, WHAT)
    mujoco = require("mujoco", EXTRA, WHAT)
    mujoco.set_mju_user_warning(mujoco_warning)  # pyright: ignore[reportAttributeAccessIssue]
    return gym


def minari() -> ModuleType:
    """``minari`` (with HDF5 storage)."""
    m = require("minari", EXTRA, WHAT)
    require("h5py", EXTRA, WHAT)
    return m
