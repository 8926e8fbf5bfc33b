"""The dataset half of `ewfm.rl`: names, the policy pack, environments, building and loading.

Layers, lowest first: `_deps` (the optional extra) and `_transitions`; `_pack` (the bundled
policies and recipes) and `_store` (where Minari keeps datasets); `_names` (ids,
environments, reference scores); `_minari_io` (reading and writing datasets) and `_envs`
(lock-step environments); `_spread` (a behaviour's per-state action spread); `_datasets`
(loading, describing) and `_build` (recording).
Nothing here imports gymnasium or Minari until it is used.
"""

from ..._experiment import MissingExtraError as MissingExtraError
from ._build import (
    BuildReport as BuildReport,
    build_dataset as build_dataset,
    collect_episodes as collect_episodes,
    dataset_plan as dataset_plan,
    ensure_dataset as ensure_dataset,
)
from ._datasets import (
    DatasetEntry as DatasetEntry,
    DatasetInfo as DatasetInfo,
    check_shapes as check_shapes,
    dataset_info as dataset_info,
    episode_returns as episode_returns,
    list_datasets as list_datasets,
    load_transitions as load_transitions,
    normalize_observations as normalize_observations,
    normalize_rewards as normalize_rewards,
    observation_stats as observation_stats,
)
from ._envs import LockstepEnvs as LockstepEnvs, make_env as make_env
from ._minari_io import BuildInProgressError as BuildInProgressError, write_dataset as write_dataset
from ._names import (
    builtin_names as builtin_names,
    dataset_id as dataset_id,
    env_id_for as env_id_for,
    normalized_score as normalized_score,
    older_names as older_names,
    recorded_dataset_id as recorded_dataset_id,
    reference_scores as reference_scores,
)
from ._pack import (
    NumpyPackPolicy as NumpyPackPolicy,
    PackPolicy as PackPolicy,
    pack_index as pack_index,
    pack_policy as pack_policy,
    recipes as recipes,
)
from ._spread import ActionSpread as ActionSpread, action_spread as action_spread
from ._store import dataset_path as dataset_path
from ._transitions import Transitions as Transitions
