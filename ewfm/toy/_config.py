"""The settings of one toy run (`ToyConfig`), its presets, and the names of data sets and methods.

Every field is a `setting`: its help text and its choices are declared once, here, and read
by validation, by ``ewfm toy run --help`` and by the docs. Stdlib only: the CLI reads this
module without importing JAX.
"""

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .._experiment import (
    ConfigError,
    check_choice,
    check_choices,
    resolve_config as _resolve_config,
    setting,
)

DATASETS: tuple[str, ...] = (
    "8gaussians",
    "swissroll",
    "rings",
    "moons",
    "checkerboard",
    "2spirals",
)
"""The six QGPO toy data sets (their energies: `ewfm.toy.ENERGIES`)."""

METHODS: dict[str, str] = {
    "efm": "energy-weighted flow matching, OT path",
    "ed": "energy-weighted diffusion, VP path (Algorithm 1)",
    "qgpo": "QGPO/CEP: behaviour diffusion + contrastive energy net, gradient guidance",
    "fm": "unguided flow matching (reference)",
    "cfg": "classifier-free guidance on c ~ Bernoulli(exp(-(E - E_min))), scale w = beta",
    "efm-beta": "one EFM net with beta as an input, trained on beta ~ U[0, beta_max]",
}
"""Every guided-generation method of the toy suite, with what it is in one line."""

OT_SOLVERS: dict[str, str] = {
    "midpoint": "RK2, 2 field evaluations per step (as QIPO-OT)",
    "heun": "Heun's RK2, 2 field evaluations per step",
    "euler": "1 field evaluation per step",
    "tsit5": "adaptive Runge-Kutta (diffrax Tsit5); steps is ignored",
}
VP_SOLVERS: dict[str, str] = {
    "dpm2": "DPM-Solver-2M on the log-SNR grid, 1 field evaluation per step (as QGPO)",
    **OT_SOLVERS,
}

RUN_FIELDS: tuple[str, ...] = ("data", "method", "beta")
"""The fields that pick one run; a sweep takes lists of them instead."""

SWEEP_BETAS: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0)
QUICK_DATASETS: tuple[str, ...] = ("8gaussians", "moons")
QUICK_BETAS: tuple[float, ...] = (0.0, 3.0)

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # short training and few evaluation samples (the tests, `ewfm toy sweep --quick`)
    "quick": {"n_data": 5_000, "steps": 300, "n_eval": 500, "n_nll": 100},
}


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known data set, else raise a one-line `ConfigError`."""
    return check_choice(name, DATASETS, "data set")


def check_method(name: str) -> str:
    """Return ``name`` if it is a known method, else raise a one-line `ConfigError`."""
    return check_choice(name, METHODS, "method")


def check_betas(betas: Sequence[float | str]) -> tuple[float, ...]:
    """The guidance strengths as floats; refuses non-numbers, negative and non-finite values."""
    out = []
    for b in betas:
        try:
            value = float(b)
        except (TypeError, ValueError):
            raise ConfigError(f"beta must be a number, got {b!r}.") from None
        if not (0.0 <= value < math.inf):
            raise ConfigError(f"beta must be a finite number >= 0, got {b}.")
        out.append(value)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Everything that defines one toy run: what to train, how long, how to sample, how to
    score. `PRESETS` holds the ``quick`` overrides; `resolve_config` applies a preset, a TOML
    file and explicit values."""

    data: str = setting(
        "8gaussians",
        "the 2D data set: a finite point cloud with an energy per point (lower is preferred)",
        choices=DATASETS,
    )
    method: str = setting("efm", "how the generator is trained and guided", choices=METHODS)
    beta: float = setting(
        3.0,
        "guidance strength (inverse temperature): the target is p(x) exp(-beta E(x)); "
        "0 is the unguided data, larger values favour low energy more",
    )
    n_data: int = setting(
        20_000, "points in the data set (the model learns this finite set, uniform weights)"
    )
    steps: int = setting(
        3_000, "gradient steps per trained network (every method gets the same budget)"
    )
    batch_size: int = setting(256, "data points per gradient step (a multiple of cep_group)")
    learning_rate: float = setting(3e-3, "Adam's peak learning rate (cosine-decayed to 10%)")
    width: int = setting(128, "hidden units per layer of every network (MLP)")
    depth: int = setting(3, "hidden layers of every network")
    cep_group: int = setting(
        16, "qgpo: points per contrastive group of the energy net's loss (divides batch_size)"
    )
    beta_max: float = setting(
        10.0, "efm-beta: the network is trained for every beta in [0, beta_max]"
    )
    cfg_dropout: float = setting(
        0.2, "cfg: probability of training a point without its label (the null condition)"
    )
    n_eval: int = setting(
        2_000, "samples drawn from the model, and from the exact target, to score a run"
    )
    n_nll: int = setting(
        500, "exact target samples whose log-likelihood under the model is measured (NLL)"
    )
    ot_solver: str = setting(
        "midpoint", "ODE solver of the OT-path methods (efm, fm, cfg, efm-beta)", choices=OT_SOLVERS
    )
    ot_steps: int = setting(
        10, "solver steps of the OT-path methods (midpoint: 2 evaluations each)"
    )
    vp_solver: str = setting(
        "dpm2", "ODE solver of the VP-path methods (ed, qgpo)", choices=VP_SOLVERS
    )
    vp_steps: int = setting(20, "solver steps of the VP-path methods (dpm2: 1 evaluation each)")
    seed: int = setting(0, "random seed of the data, the initialisation, training and sampling")

    def __post_init__(self):
        check_choices(self)
        check_betas([self.beta])
        for name in ("n_data", "steps", "batch_size", "width", "depth", "cep_group", "n_eval",
                     "n_nll", "ot_steps", "vp_steps"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.batch_size % self.cep_group:
            raise ConfigError(
                f"batch_size {self.batch_size} must be a multiple of cep_group {self.cep_group}; "
                "change one of them."
            )
        if not (0.0 < self.beta_max < math.inf):
            raise ConfigError(f"beta_max must be a finite number > 0, got {self.beta_max}.")
        if not (0.0 < self.learning_rate < math.inf):
            raise ConfigError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate}."
            )
        if not (0.0 <= self.cfg_dropout < 1.0):
            raise ConfigError(f"cfg_dropout must lie in [0, 1), got {self.cfg_dropout}.")


def resolve_config(
    preset: str = "default",
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ToyConfig:
    """A run's settings: the ``preset`` (`PRESETS`), then the TOML ``config_file`` (flat keys,
    or a ``[toy]`` table), then ``overrides`` (``None`` values are ignored)."""
    return _resolve_config(ToyConfig, PRESETS, preset, config_file, overrides, section="toy")
