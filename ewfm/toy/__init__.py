"""2D toy experiments: energy-guided generation measured against the exact target.

The six QGPO toy data sets with their energies (`DATASETS`, `dataset`, `energy`), the exact
guided target of a finite data set (`sample_target`, `target_probabilities`), the sliced
Wasserstein-2 distance, the methods (`METHODS`: EFM, ED, beta-as-input EFM, QGPO/CEP, CFG,
unguided FM), single runs (`ToyConfig`, `train`) and sweeps. Import explicitly:
``import ewfm.toy``.
"""

from .._experiment import ConfigError as ConfigError
from ._config import (
    DATASETS as DATASETS,
    METHODS as METHODS,
    OT_SOLVERS as OT_SOLVERS,
    PRESETS as PRESETS,
    QUICK_BETAS as QUICK_BETAS,
    QUICK_DATASETS as QUICK_DATASETS,
    RUN_FIELDS as RUN_FIELDS,
    SWEEP_BETAS as SWEEP_BETAS,
    VP_SOLVERS as VP_SOLVERS,
    ToyConfig as ToyConfig,
    check_betas as check_betas,
    check_dataset as check_dataset,
    check_method as check_method,
    resolve_config as resolve_config,
)
from ._data import (
    ENERGIES as ENERGIES,
    dataset as dataset,
    energy as energy,
)
from ._methods import (
    KINDS as KINDS,
    ToyModel as ToyModel,
    build_model as build_model,
    draw as draw,
    model_log_likelihood as model_log_likelihood,
    nets_used as nets_used,
    networks as networks,
    sampler as sampler,
    time_sampling as time_sampling,
    train_network as train_network,
)
from ._run import (
    Run as Run,
    ToyProblem as ToyProblem,
    evaluate as evaluate,
    exact_sets as exact_sets,
    guidance_goals as guidance_goals,
    load_run as load_run,
    make_problem as make_problem,
    sampling_times as sampling_times,
    summary_markdown as summary_markdown,
    sweep as sweep,
    train as train,
)
from ._target import (
    sample_target as sample_target,
    sliced_wasserstein as sliced_wasserstein,
    target_mean_energy as target_mean_energy,
    target_probabilities as target_probabilities,
)
