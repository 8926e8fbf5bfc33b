"""2D toy experiments: energy-guided generation measured against the exact target.

The six QGPO toy data sets with their energies (`DATASETS`, `dataset`, `energy`), the exact
guided target of a finite data set (`sample_target`, `target_probabilities`), the sliced
Wasserstein-2 distance, the methods (EFM, ED, beta-as-input EFM, QGPO/CEP, CFG, unguided FM),
single runs and sweeps. Import explicitly: ``import ewfm.toy``.
"""

from ._data import (
    DATASETS as DATASETS,
    ENERGIES as ENERGIES,
    check_dataset as check_dataset,
    dataset as dataset,
    energy as energy,
)
from ._experiment import (
    QUICK_BETAS as QUICK_BETAS,
    QUICK_DATASETS as QUICK_DATASETS,
    SWEEP_BETAS as SWEEP_BETAS,
    RunResult as RunResult,
    ToyProblem as ToyProblem,
    check_betas as check_betas,
    evaluate as evaluate,
    exact_sets as exact_sets,
    guidance_goals as guidance_goals,
    make_problem as make_problem,
    run_experiment as run_experiment,
    save_run as save_run,
    summary_markdown as summary_markdown,
    sweep as sweep,
)
from ._methods import (
    KINDS as KINDS,
    METHOD_DOCS as METHOD_DOCS,
    METHODS as METHODS,
    ToyConfig as ToyConfig,
    ToyModel as ToyModel,
    build_model as build_model,
    check_method as check_method,
    draw as draw,
    model_log_likelihood as model_log_likelihood,
    nets_used as nets_used,
    time_sampling as time_sampling,
    train_network as train_network,
)
from ._target import (
    sample_target as sample_target,
    sliced_wasserstein as sliced_wasserstein,
    target_mean_energy as target_mean_energy,
    target_probabilities as target_probabilities,
)
