"""Reading and (atomically) writing Minari datasets."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import minari
from ._names import builtin_for_id, not_found_message
from ._store import dataset_path, datasets_root, is_local
from ._transitions import Transitions


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


class BuildInProgressError(RuntimeError):
    """Another process is building the same dataset right now."""


@contextlib.contextmanager
def build_lock(dataset_id_: str) -> Iterator[None]:
    """Refuse a second concurrent build of one id (a lock file holding the builder's pid)."""
    path = datasets_root() / (".ewfm-lock-" + dataset_id_.replace("/", "__"))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except PermissionError:
                pass
            raise BuildInProgressError(
                f"dataset {dataset_id_!r} is being built by process {pid}; wait for it to "
                f"finish (or delete {path} if that process is gone)"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def exists_message(dataset_id_: str) -> str:
    name = builtin_for_id(dataset_id_) or dataset_id_
    return (
        f"dataset {dataset_id_!r} already exists at {dataset_path(dataset_id_)}; "
        f"rebuild it with `ewfm data build {name} --overwrite` (overwrite=True)"
    )


def write_dataset(
    dataset_id_: str,
    episodes: list[dict[str, Any]],
    *,
    env_id: str,
    ref_min: float | None,
    ref_max: float | None,
    algorithm_name: str,
    description: str,
    extra_metadata: dict[str, Any],
    overwrite: bool,
) -> Path:
    """Write a Minari dataset into a hidden temporary directory, then rename it into place.

    Minari skips hidden directories, so an interrupted build leaves nothing it would list or
    load; the rename is atomic on one filesystem. ``overwrite`` replaces an existing dataset.
    """
    m = minari()
    from minari.data_collector import EpisodeBuffer
    from minari.utils import parse_dataset_id

    root = datasets_root()
    final = root / dataset_id_
    if final.exists() and not overwrite:
        raise FileExistsError(exists_message(dataset_id_))
    tmp = Path(tempfile.mkdtemp(prefix=".ewfm-build-", dir=root))
    try:
        buffers = [
            EpisodeBuffer(
                id=k,
                seed=int(ep["seed"]),
                observations=ep["observations"],
                actions=ep["actions"],
                rewards=ep["rewards"],
                terminations=ep["terminations"],
                truncations=ep["truncations"],
            )
            for k, ep in enumerate(episodes)
        ]
        with _minari_root(tmp):
            ds = m.create_dataset_from_buffers(
                dataset_id=dataset_id_,
                buffer=buffers,
                env=env_id,
                eval_env=env_id,
                algorithm_name=algorithm_name,
                author="ewfm",
                author_email="https://github.com/ewfm (see ewfm/rl/policies/README.md)",
                code_permalink="ewfm.rl.build_dataset",
                ref_min_score=ref_min,
                ref_max_score=ref_max,
                description=description,
                data_format="hdf5",
            )
            ds.storage.update_metadata(extra_metadata)
        final.parent.mkdir(parents=True, exist_ok=True)
        namespace = parse_dataset_id(dataset_id_)[0]
        if namespace is not None:  # keep Minari's namespace record (its metadata file)
            for src in (tmp / namespace).glob("*.json"):
                if not (root / namespace / src.name).exists():
                    shutil.copy(src, root / namespace / src.name)
        trash = None
        if final.exists():
            if not overwrite:
                raise FileExistsError(exists_message(dataset_id_))
            trash = Path(tempfile.mkdtemp(prefix=".ewfm-old-", dir=root))
            os.rename(final, trash / "old")
        os.rename(tmp / dataset_id_, final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_minari(dataset_id_: str, *, download: bool = False) -> Any:
    """``minari.load_dataset`` with our one-line error when the dataset is not local."""
    m = minari()
    if not is_local(dataset_id_) and not download:
        raise FileNotFoundError(not_found_message(dataset_id_))
    return m.load_dataset(dataset_id_, download=download)


def episodes_to_transitions(episodes: list[dict[str, Any]], dataset_id_: str) -> Transitions:
    """Concatenate Minari episodes (observations hold T+1 entries) into `Transitions`.

    The last transition of an episode that ends with neither flag (a collection cut-off) is
    marked as a timeout, so every episode boundary is visible.
    """
    obs, nxt, act, rew, term, tout = [], [], [], [], [], []
    for ep in episodes:
        o = ep["observations"]
        if not isinstance(o, np.ndarray):
            raise ValueError(
                f"dataset {dataset_id_!r} has structured (dict/tuple) observations; "
                "ewfm.rl supports Box observation spaces only"
            )
        o = o.reshape(o.shape[0], -1)
        t = len(ep["rewards"])
        obs.append(o[:t])
        nxt.append(o[1 : t + 1])
        act.append(np.asarray(ep["actions"]).reshape(t, -1))
        rew.append(np.asarray(ep["rewards"]))
        te = np.asarray(ep["terminations"], bool)
        tr = np.asarray(ep["truncations"], bool) & ~te
        if t and not (te[-1] or tr[-1]):
            tr = tr.copy()
            tr[-1] = True
        term.append(te)
        tout.append(tr)

    def cat(xs: list[np.ndarray], width: int | None = None) -> np.ndarray:
        if not xs:
            return np.zeros((0,) if width is None else (0, width), np.float32)
        return np.concatenate(xs).astype(np.float32)

    return Transitions(
        observations=cat(obs, 0),
        actions=cat(act, 0),
        rewards=cat(rew),
        next_observations=cat(nxt, 0),
        terminals=cat(term),
        timeouts=cat(tout),
    )
