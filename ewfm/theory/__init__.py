"""Numerical checks of the paper's results against exact references (``ewfm verify-theorems``).

Each check compares an ingredient with an exact answer in float64 on toy Gaussians, Gaussian
mixtures and finite data sets, and returns a `CheckResult`. Its ``subject`` says what the
ingredient is: ``"library"`` (paths, energy weights, losses, renewal, sampler) or ``"paper
maths"`` (an exact reference formula of this package, with library code around it). Run them
all with `run_checks`, or one with ``CHECKS["lemma-3.2"]()``; pass keyword arguments to a
check to replace its ingredients. See docs/theory.md for each statement, how it is checked
and the measured errors.
"""

from . import (
    _renewal as _renewal,  # registers the eq. (5.4) checks
    _trained as _trained,  # registers the trained checks
)
from ._exact import (
    EXACT_TOL as EXACT_TOL,
    finite_2d as finite_2d,
    gauss_2d as gauss_2d,
    mixture_2d as mixture_2d,
    paths as paths,
    pushforward as pushforward,
    tilted_closed_form as tilted_closed_form,
    uniform_finite as uniform_finite,
)
from ._reference import (
    FiniteData as FiniteData,
    GaussianMixture as GaussianMixture,
    gaussian_data as gaussian_data,
    gaussian_marginal as gaussian_marginal,
    guided_score as guided_score,
    guided_velocity as guided_velocity,
    intermediate_energy as intermediate_energy,
    log_marginal as log_marginal,
    posterior_logits as posterior_logits,
    posterior_mean as posterior_mean,
    tilt_gaussian as tilt_gaussian,
    tilted_gaussians as tilted_gaussians,
)
from ._registry import (
    CHECKS as CHECKS,
    SUBJECTS as SUBJECTS,
    Check as Check,
    CheckResult as CheckResult,
    Outcome as Outcome,
    check_names as check_names,
    run_checks as run_checks,
    select_checks as select_checks,
)
