"""Offline RL data for ewfm: Minari datasets, locally built D4RL-style datasets, evaluation.

Import explicitly (``import ewfm.rl``): it needs the ``[rl]`` extra (gymnasium with MuJoCo,
Minari), which is imported lazily, so ``import ewfm.rl`` itself stays light.
"""

# -- training pipeline (`ewfm train`) --
from ._config import (
    ALGOS as ALGOS,
    PRESETS as PRESETS,
    Q_NORMS as Q_NORMS,
    ConfigError as ConfigError,
    TrainConfig as TrainConfig,
    resolve_config as resolve_config,
)
from ._critic import (
    Critic as Critic,
    CriticBatch as CriticBatch,
    ReturnBatch as ReturnBatch,
    critic_loss as critic_loss,
    discounted_returns as discounted_returns,
    make_critic as make_critic,
    q_values as q_values,
    return_loss as return_loss,
    soft_target_optimizer as soft_target_optimizer,
    support_target as support_target,
)

# -- datasets (`ewfm data`): names, the policy pack, building, loading --
from ._data import (
    BuildInProgressError as BuildInProgressError,
    BuildReport as BuildReport,
    DatasetEntry as DatasetEntry,
    DatasetInfo as DatasetInfo,
    MissingExtraError as MissingExtraError,
    NumpyPackPolicy as NumpyPackPolicy,
    PackPolicy as PackPolicy,
    Transitions as Transitions,
    build_dataset as build_dataset,
    builtin_names as builtin_names,
    check_shapes as check_shapes,
    collect_episodes as collect_episodes,
    dataset_id as dataset_id,
    dataset_info as dataset_info,
    dataset_path as dataset_path,
    dataset_plan as dataset_plan,
    ensure_dataset as ensure_dataset,
    env_id_for as env_id_for,
    episode_returns as episode_returns,
    list_datasets as list_datasets,
    load_transitions as load_transitions,
    make_env as make_env,
    normalize_observations as normalize_observations,
    normalize_rewards as normalize_rewards,
    normalized_score as normalized_score,
    observation_stats as observation_stats,
    pack_index as pack_index,
    pack_policy as pack_policy,
    recipes as recipes,
    reference_scores as reference_scores,
    write_dataset as write_dataset,
)
from ._evaluate import EvalResult as EvalResult, evaluate as evaluate
from ._pipeline import (
    evaluate_run as evaluate_run,
    renew_supports as renew_supports,
    train as train,
)
from ._qipo import (
    PolicySampler as PolicySampler,
    SupportSet as SupportSet,
    draw_supports as draw_supports,
    make_qipo_loss as make_qipo_loss,
    scale_q as scale_q,
)
