"""Offline RL data for ewfm: Minari datasets, locally built D4RL-style datasets, evaluation.

Import explicitly (``import ewfm.rl``): it needs the ``[rl]`` extra (gymnasium with MuJoCo,
Minari), which is imported lazily, so ``import ewfm.rl`` itself stays light.
"""

# -- training pipeline (`ewfm train`) --
from .._experiment import ConfigError as ConfigError
from ._config import (
    CRITIC_ONLY as CRITIC_ONLY,
    CRITICS as CRITICS,
    METHODS as METHODS,
    PRESETS as PRESETS,
    Q_NORMS as Q_NORMS,
    Q_TRUST as Q_TRUST,
    REWARD_SCALES as REWARD_SCALES,
    WARM_STARTS as WARM_STARTS,
    TrainConfig as TrainConfig,
    read_config as read_config,
    resolve_config as resolve_config,
    resume_config as resume_config,
)
from ._context import Dims as Dims
from ._critic import (
    Critic as Critic,
    CriticBatch as CriticBatch,
    ReturnBatch as ReturnBatch,
    TransitionBatch as TransitionBatch,
    WarmBatch as WarmBatch,
    critic_loss as critic_loss,
    discounted_returns as discounted_returns,
    expectile_loss as expectile_loss,
    iql_loss as iql_loss,
    make_critic as make_critic,
    q_values as q_values,
    return_loss as return_loss,
    reward_factor as reward_factor,
    soft_target_optimizer as soft_target_optimizer,
    support_target as support_target,
    value_warm_loss as value_warm_loss,
)

# -- datasets (`ewfm data`): names, the policy pack, building, loading --
from ._data import (
    ActionSpread as ActionSpread,
    BuildInProgressError as BuildInProgressError,
    BuildReport as BuildReport,
    DatasetEntry as DatasetEntry,
    DatasetInfo as DatasetInfo,
    MissingExtraError as MissingExtraError,
    NumpyPackPolicy as NumpyPackPolicy,
    PackPolicy as PackPolicy,
    Transitions as Transitions,
    action_spread as action_spread,
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
    older_names as older_names,
    pack_index as pack_index,
    pack_policy as pack_policy,
    recipes as recipes,
    recorded_dataset_id as recorded_dataset_id,
    reference_scores as reference_scores,
    write_dataset as write_dataset,
)
from ._diagnose import (
    PROBES as PROBES,
    diagnose_critic as diagnose_critic,
    norm_slope as norm_slope,
    plot_diagnosis as plot_diagnosis,
    score_probe as score_probe,
    spearman_brown as spearman_brown,
    split_half_reliability as split_half_reliability,
    truth_gain as truth_gain,
    weight_gain as weight_gain,
    within_spearman as within_spearman,
)
from ._evaluate import (
    EvalResult as EvalResult,
    evaluate as evaluate,
    policy_caller as policy_caller,
)
from ._policy import (
    Policy as Policy,
    policy_sampler as policy_sampler,
    seed_count as seed_count,
    seed_slice as seed_slice,
)
from ._qipo import (
    SupportSet as SupportSet,
    draw_supports as draw_supports,
    head_values as head_values,
    make_qipo_loss as make_qipo_loss,
    ranking_reliability as ranking_reliability,
    renew_supports as renew_supports,
    scale_q as scale_q,
    score_supports as score_supports,
    support_reliability as support_reliability,
    support_stats as support_stats,
)
from ._run import (
    Run as Run,
    evaluate_run as evaluate_run,
    load_run as load_run,
    train as train,
)
from ._stages import (
    CRITIC_STAGES as CRITIC_STAGES,
    STAGES as STAGES,
    CriticStage as CriticStage,
    Stage as Stage,
    StopTraining as StopTraining,
)
