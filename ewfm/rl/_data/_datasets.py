"""Loading datasets as `Transitions`, describing them, listing them, and normalising them."""

import json
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._deps import minari
from ._envs import make_env
from ._minari_io import episodes_to_transitions, load_minari
from ._names import builtin_for_id, builtin_names, dataset_id, env_id_for, reference_scores
from ._store import dataset_path, is_local, read_metadata
from ._transitions import Transitions


def load_transitions(name_or_id: str, *, download: bool = False) -> Transitions:
    """A dataset as `Transitions` (float32): a built-in name or any Minari dataset id.

    ``terminals`` are the recorded terminations only; time-limit truncations go to
    ``timeouts`` so that bootstrapping continues through them. ``download=True`` lets Minari
    fetch a missing remote dataset (where the network allows).
    """
    id_ = dataset_id(name_or_id)
    ds = load_minari(id_, download=download)
    episodes = list(ds.storage.get_episodes(ds.episode_indices))
    return episodes_to_transitions(episodes, id_)


def episode_returns(t: Transitions) -> np.ndarray:
    """The undiscounted return of every episode of a dataset, in order (float64)."""
    ends = t.episode_ends
    if len(ends) == 0:
        return np.zeros((0,))
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(t.rewards, np.float64))])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return csum[ends + 1] - csum[starts]


def check_shapes(t: Transitions, env_id: str, *, name: str = "dataset") -> None:
    """Refuse a dataset whose observation/action shapes differ from the environment's."""
    env = make_env(env_id)
    try:
        env_obs = tuple(env.observation_space.shape)
        env_act = tuple(env.action_space.shape)
    finally:
        env.close()
    obs, act = tuple(t.observations.shape[1:]), tuple(t.actions.shape[1:])
    if obs != env_obs or act != env_act:
        raise ValueError(
            f"{name} has observations {list(obs)} and actions {list(act)} but {env_id} has "
            f"observations {list(env_obs)} and actions {list(env_act)}: evaluate it in a "
            "matching environment"
        )


def normalize_rewards(t: Transitions, *, scale: float = 1000.0) -> Transitions:
    """IQL-style reward scaling for locomotion: ``r * scale / (max_return - min_return)``.

    The returns are those of the dataset's episodes (as IQL, IDQL and QGPO-style code do for
    the D4RL locomotion tasks). Returns a new `Transitions`.
    """
    rets = episode_returns(t)
    spread = float(rets.max() - rets.min()) if len(rets) else 0.0
    if spread <= 0:
        raise ValueError("cannot scale rewards: the dataset's episode returns are all equal")
    return Transitions(
        observations=t.observations,
        actions=t.actions,
        rewards=(t.rewards * (scale / spread)).astype(np.float32),
        next_observations=t.next_observations,
        terminals=t.terminals,
        timeouts=t.timeouts,
    )


def observation_stats(t: Transitions, *, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (+ ``eps``) of the observations, TD3+BC-style, for ``(s - mean) / std``."""
    obs = np.asarray(t.observations, np.float64)
    return obs.mean(0).astype(np.float32), (obs.std(0) + eps).astype(np.float32)


def normalize_observations(
    t: Transitions, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> Transitions:
    """``(s - mean) / std`` on observations and next observations (`observation_stats`)."""
    if mean is None or std is None:
        mean, std = observation_stats(t)
    return Transitions(
        observations=((t.observations - mean) / std).astype(np.float32),
        actions=t.actions,
        rewards=t.rewards,
        next_observations=((t.next_observations - mean) / std).astype(np.float32),
        terminals=t.terminals,
        timeouts=t.timeouts,
    )


@dataclass(frozen=True)
class DatasetInfo:
    """Size, shapes and return statistics of a local dataset (``ewfm data info``)."""

    dataset_id: str
    env_id: str
    path: str
    transitions: int
    episodes: int
    terminations: int
    timeouts: int
    observation_dim: int
    action_dim: int
    return_mean: float
    return_std: float
    return_min: float
    return_max: float
    normalized_mean: float | None
    normalized_std: float | None
    normalized_min: float | None
    normalized_max: float | None
    recipe: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_info(name_or_id: str) -> DatasetInfo:
    """Describe a local dataset: size, episodes, raw and normalised returns, recipe metadata."""
    id_ = dataset_id(name_or_id)
    t = load_transitions(id_)
    meta = read_metadata(dataset_path(id_))
    rets = episode_returns(t)
    try:
        lo, hi = reference_scores(id_)
        norm: np.ndarray | None = 100.0 * (rets - lo) / (hi - lo)
    except ValueError:
        norm = None
    try:
        env_id = env_id_for(id_)
    except ValueError:
        env_id = "?"

    def stat(x: np.ndarray | None, f: Any) -> float | None:
        return None if x is None or len(x) == 0 else float(f(x))

    recipe = meta.get("ewfm", {})
    if isinstance(recipe, str):
        recipe = json.loads(recipe)
    return DatasetInfo(
        dataset_id=id_,
        env_id=env_id,
        path=str(dataset_path(id_)),
        transitions=t.size,
        episodes=len(rets),
        terminations=int(t.terminals.sum()),
        timeouts=int(t.timeouts.sum()),
        observation_dim=int(t.observations.shape[1]),
        action_dim=int(t.actions.shape[1]),
        return_mean=float(rets.mean()),
        return_std=float(rets.std()),
        return_min=float(rets.min()),
        return_max=float(rets.max()),
        normalized_mean=stat(norm, np.mean),
        normalized_std=stat(norm, np.std),
        normalized_min=stat(norm, np.min),
        normalized_max=stat(norm, np.max),
        recipe=recipe,
    )


@dataclass(frozen=True)
class DatasetEntry:
    """One row of ``ewfm data list``: a built-in recipe and/or a local Minari dataset."""

    name: str | None
    dataset_id: str
    local: bool
    transitions: int | None
    episodes: int | None


def list_datasets() -> list[DatasetEntry]:
    """Every built-in recipe (built or not) and every other local Minari dataset."""
    rows = []
    for name in builtin_names():
        id_ = dataset_id(name)
        local = is_local(id_)
        meta = read_metadata(dataset_path(id_)) if local else {}
        rows.append(
            DatasetEntry(name, id_, local, meta.get("total_steps"), meta.get("total_episodes"))
        )
    seen = {r.dataset_id for r in rows}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = minari().list_local_datasets()
    for id_, meta in sorted(local.items()):
        if id_ not in seen:
            rows.append(
                DatasetEntry(
                    builtin_for_id(id_),
                    id_,
                    True,
                    meta.get("total_steps"),
                    meta.get("total_episodes"),
                )
            )
    return rows
