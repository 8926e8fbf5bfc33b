"""Training configuration for `ewfm train`: one flat, frozen record, presets, TOML and overrides.

Every hyperparameter of the pipeline (behaviour warm-up, critic, QIPO iterations, the QGPO
baseline, sampling and evaluation) is a field of `TrainConfig`. A run resolves its config as
``preset -> TOML file -> explicit overrides`` and writes the result to ``config.json``.
Unknown keys are refused with the closest valid key named.
"""

import dataclasses
import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

ALGOS: tuple[str, ...] = ("qipo-ot", "qipo-diff", "bc", "qgpo")
PRESETS_NAMES: tuple[str, ...] = ("quick", "paper")


Q_NORMS: dict[str, str] = {
    "none": "beta multiplies Q itself (the paper): beta is in units of 1/Q",
    "spread": "Q divided by its mean within-state spread (std over each state's M supports, "
    "averaged over the states of the support set): beta is dimensionless and one value "
    "transfers between datasets whose returns differ in scale",
    "state": "Q divided by each state's own spread (std over its M supports): every state "
    "gets the same weight sharpness, however flat or noisy its Q is",
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (see ``docs/rl.md`` for what each does).

    An *epoch* is ``steps_per_epoch`` optimiser steps on batches drawn with replacement
    (the datasets hold a million transitions; a full pass is not a useful unit).
    """

    algo: str = "qipo-ot"
    dataset: str = "hopper-medium"
    seed: int = 0
    seeds: int = 1  # K seeds (seed .. seed+K-1) trained side by side in one vmapped program
    # data: transitions used by the critic and the support sets (0 = all of them)
    subset: int = 100_000
    steps_per_epoch: int = 1000
    # behaviour model (warm-up; the policy of `bc`)
    net: str = "mlp"  # "mlp" (MLPField) or "resnet" (QGPO's ResidualMLPField)
    width: int = 256
    depth: int = 4
    lr: float = 3e-4
    batch_size: int = 256
    ema_decay: float = 0.999
    bc_epochs: int = 25
    # critic: in-support softmax Q-learning (QGPO), twin Q, soft target updates
    critic_mc_epochs: int = 5  # warm start: regress Q on Monte-Carlo returns first (0 = off)
    critic_epochs: int = 10  # then in-support softmax Q-learning
    critic_width: int = 256
    critic_depth: int = 2
    critic_lr: float = 3e-4
    critic_batch: int = 256
    critic_support: int = 8  # support actions per next state for the target
    gamma: float = 0.99
    tau: float = 0.005
    beta_q: float = 10.0
    # QIPO iterations (Algorithm 2)
    support: int = 16  # M
    keep_data_action: bool = True
    beta: float = 1.0  # hopper-medium, epoch 4: 53.0 at beta 1 vs 42.3 at beta 0.3 (20 episodes)
    # 2 renewals: with the warm-started critic hopper-medium peaked at epoch 4 (53.0) and
    # collapsed by epoch 8 (1.5): each renewal sharpens mu exp(n beta Q), and Q's errors
    # how Q enters the weights M softmax_j(beta Q_j): "none" (the paper; beta in 1/Q units),
    # "spread" (Q / its mean within-state std: beta dimensionless), "state" (per-state std).
    # 3 seeds, beta 1: spread vs none 59.5 vs 57.5 (hopper), 63.6 vs 55.1 (walker2d),
    # 18.3 vs 15.1 (halfcheetah)
    q_norm: str = "spread"
    qipo_epochs: int = 4
    renew_every: int = 2  # K_renew, in epochs
    qipo_states: int = 32  # states per batch (each with its M supports)
    qipo_subset: int = 20_000  # states that carry support sets (0 = the whole subset)
    qipo_lr: float = 1e-4
    # QGPO baseline: CEP energy network + gradient guidance
    cep_epochs: int = 5
    cep_beta: float = 3.0
    # measured on hopper-medium (3 seeds, 30 episodes): 0 / 0.1 / 0.3 / 1 / 3 scored
    # 41.0 / 45.8 / 55.0 / 12.2 / 0.9 with the quick CEP budget; the paper preset uses 1
    guidance: float = 0.3
    # sampling (the policy); support renewal uses the same sampler
    solver: str = ""  # "" = midpoint for OT, dpm2 for VP
    sample_steps: int = 0  # 0 = 5 midpoint steps (OT, 10 evaluations) or 15 DPM-Solver steps (VP)
    # evaluation
    eval_every: int = 2  # epochs of the last stage; 0 = final only
    eval_episodes: int = 5
    final_episodes: int = 10
    eval_max_steps: int = 1000
    eval_behaviour: bool = True  # also score the warm-up model at the end (BC side by side)

    @property
    def path_kind(self) -> str:
        """``"ot"`` for QIPO-OT and BC, ``"vp"`` for QIPO-Diff and QGPO."""
        return "ot" if self.algo in ("qipo-ot", "bc") else "vp"

    @property
    def policy_solver(self) -> str:
        return self.solver or ("midpoint" if self.path_kind == "ot" else "dpm2")

    @property
    def policy_steps(self) -> int:
        """Solver steps: measured, DPM-Solver with 5 steps loses most of a VP policy's score."""
        return self.sample_steps or (5 if self.path_kind == "ot" else 15)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: about 15-25 minutes on 2 cores for QIPO-OT on hopper-medium.
    "quick": {},
    # The paper's / QGPO's scale: M = 16, QGPO's residual score network, 15-step DPM-Solver
    # for the VP models, RK2 (midpoint) for QIPO-OT, full dataset, long schedules.
    # Days on a CPU; meant for an accelerator.
    "paper": {
        "subset": 0,
        "net": "resnet",
        "batch_size": 4096,
        "bc_epochs": 600,
        "critic_mc_epochs": 0,
        "critic_epochs": 100,
        "critic_batch": 256,
        "critic_support": 16,
        "critic_depth": 3,
        "support": 16,
        "qipo_epochs": 100,
        "renew_every": 5,
        "qipo_states": 256,
        "qipo_subset": 0,
        "beta": 3.0,
        "q_norm": "none",
        "cep_epochs": 100,
        "guidance": 1.0,
        "sample_steps": 15,
        "eval_every": 10,
        "eval_episodes": 10,
        "final_episodes": 10,
    },
}


class ConfigError(ValueError):
    """A bad configuration value or key (one line, naming the fix)."""


def _closest(key: str) -> str:
    match = difflib.get_close_matches(key, list(FIELDS), n=1, cutoff=0.0)
    return match[0] if match else ""


def _coerce(key: str, value: Any) -> Any:
    if key not in FIELDS:
        raise ConfigError(f"unknown config key {key!r}; did you mean {_closest(key)!r}?")
    kind = type(getattr(TrainConfig(), key))
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}.")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a {kind.__name__}, got {value!r}.") from None


def validate(cfg: TrainConfig) -> TrainConfig:
    """Refuse impossible settings with a one-line message naming the fix."""
    if cfg.algo not in ALGOS:
        raise ConfigError(f"unknown algo {cfg.algo!r}; choose one of {', '.join(ALGOS)}.")
    for name in ("beta", "beta_q", "cep_beta", "guidance"):
        v = getattr(cfg, name)
        if not (v >= 0.0 and v < float("inf")):
            raise ConfigError(f"{name} must be a finite number >= 0, got {v}.")
    for name in ("support", "critic_support"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} (M) must be >= 1, got {getattr(cfg, name)}.")
    if cfg.keep_data_action and cfg.support < 2 and cfg.algo.startswith("qipo"):
        raise ConfigError("keep_data_action needs support >= 2 (one data action + samples).")
    for name in (
        "steps_per_epoch",
        "width",
        "depth",
        "batch_size",
        "critic_width",
        "critic_depth",
        "critic_batch",
        "renew_every",
        "qipo_states",
        "final_episodes",
        "eval_max_steps",
        "seeds",
    ):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
    for name in (
        "bc_epochs",
        "critic_epochs",
        "critic_mc_epochs",
        "qipo_epochs",
        "cep_epochs",
        "subset",
        "qipo_subset",
    ):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}.")
    if cfg.sample_steps < 0:
        raise ConfigError(f"sample_steps must be >= 0 (0 = automatic), got {cfg.sample_steps}.")
    if cfg.eval_every < 0 or cfg.eval_episodes < 0:
        raise ConfigError("eval_every and eval_episodes must be >= 0.")
    if not 0.0 < cfg.gamma < 1.0:
        raise ConfigError(f"gamma must lie in (0, 1), got {cfg.gamma}.")
    if not 0.0 < cfg.tau <= 1.0:
        raise ConfigError(f"tau must lie in (0, 1], got {cfg.tau}.")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must lie in [0, 1), got {cfg.ema_decay}.")
    if cfg.q_norm not in Q_NORMS:
        raise ConfigError(f"unknown q_norm {cfg.q_norm!r}; choose one of {', '.join(Q_NORMS)}.")
    if cfg.net not in ("mlp", "resnet"):
        raise ConfigError(f"net must be 'mlp' or 'resnet', got {cfg.net!r}.")
    solvers = ("", "euler", "heun", "midpoint", "dpm2")
    if cfg.solver not in solvers:
        raise ConfigError(f"unknown solver {cfg.solver!r}; choose one of {', '.join(solvers[1:])}.")
    if cfg.solver == "dpm2" and cfg.path_kind == "ot":
        raise ConfigError("solver dpm2 needs a VP model (qipo-diff or qgpo); use midpoint.")
    if cfg.seeds > 64:
        raise ConfigError(f"seeds must be at most 64 (one vmapped program), got {cfg.seeds}.")
    return cfg


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML table of config keys (an optional ``[train]`` table also works)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass an existing .toml file.")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}.") from None
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    for k, v in data.items():
        if isinstance(v, dict):
            raise ConfigError(f"config file {p}: nested table [{k}] is not allowed; use flat keys.")
    return data


def resolve_config(
    preset: str = "quick",
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """The run's settings: ``preset``, then the TOML ``config_file``, then ``overrides``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    values: dict[str, Any] = dict(PRESETS[preset])
    if config_file is not None:
        values.update(load_toml(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    coerced = {k: _coerce(k, v) for k, v in values.items()}
    return validate(TrainConfig(**coerced))


# keys that run directories written before they existed lack: the value those runs used
_LEGACY: dict[str, Any] = {"q_norm": "none"}


def config_from_json(path: str | Path) -> TrainConfig:
    """Read the ``config.json`` of a run directory."""
    data = {**_LEGACY, **json.loads(Path(path).read_text())}
    return validate(TrainConfig(**{k: _coerce(k, v) for k, v in data.items()}))
