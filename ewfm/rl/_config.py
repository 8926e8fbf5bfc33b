"""The settings of one `ewfm train` run (`TrainConfig`), its presets, and the names of methods.

Every field is a `setting`: its help text and its choices are declared once, here, and read
by validation, by ``ewfm train --help`` and by the docs. A run resolves its config as
``preset -> TOML file -> explicit overrides`` and writes it to ``config.json``. Stdlib only:
the CLI reads this module without importing JAX.
"""

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._experiment import (
    ConfigError,
    check_choices,
    config_from_json,
    load_toml,
    resolve_config as _resolve_config,
    setting,
)

METHODS: dict[str, str] = {
    "qipo-ot": "QIPO with a flow-matching policy (OT path): behaviour model, critic, then "
    "Q-weighted flow matching on supports re-drawn from the current policy",
    "qipo-diff": "QIPO with a diffusion policy (VP path): the same stages with the "
    "Q-weighted denoising loss",
    "bc": "behaviour cloning: the flow-matching behaviour model alone (no critic)",
    "qgpo": "the QGPO baseline: diffusion behaviour model, critic, contrastive energy network "
    "(CEP), sampled with energy-gradient guidance",
}
"""Every training method, with what it is in one line (the ``method`` setting)."""

Q_NORMS: dict[str, str] = {
    "none": "beta multiplies Q itself (the paper): beta is in units of 1/Q",
    "spread": "Q divided by its mean within-state spread (std over each state's M supports, "
    "averaged over the states of the support set): beta is dimensionless and one value "
    "transfers between datasets whose returns differ in scale",
    "state": "Q divided by each state's own spread (std over its M supports): every state "
    "gets the same weight sharpness, however flat or noisy its Q is",
}
"""How Q enters the weights ``M softmax_j(beta Q_j)`` (the ``q_norm`` setting)."""

Q_TRUST: dict[str, str] = {
    "full": "the weights use Q as the critic gives it (the paper)",
    "twins": "beta is shrunk by the reliability of the critic's within-state ranking, "
    "estimated at each renewal from how well its twin Q heads agree within states: twins "
    "that agree keep beta, twins whose rankings are unrelated give uniform weights (BC)",
}
"""How far QIPO trusts the critic's ranking of a state's supports (the ``q_trust`` setting)."""

CRITICS: dict[str, str] = {
    "in-support": "twin Q networks by in-support softmax Q-learning (QGPO, the paper's): the "
    "target is a softmax over critic_support actions drawn from the behaviour model per next "
    "state, pre-sampled once for every transition of the subset",
    "iql": "implicit Q-learning (IQL): a state value V by expectile regression of the twin "
    "target Q on the dataset's own actions, and Q by r + gamma V(s'); in-sample (no action "
    "outside the data is evaluated, nothing pre-sampled)",
}
"""How the critic is trained (the ``critic`` setting); each names a stage in ``_critics.py``."""

CRITIC_ONLY: dict[str, str] = {"expectile": "iql"}
"""Settings that only one critic reads, by the critic that reads them: another critic
refuses a value other than the default (it would be silently ignored)."""

REWARD_SCALES: dict[str, str] = {
    "none": "the dataset's rewards as they are",
    "returns": "rewards times 1000 / (max - min) of the dataset's episode returns (the "
    "D4RL convention of IQL and QGPO): Q has about the same scale on every dataset",
}
"""How the critic's rewards are scaled (the ``reward_scale`` setting)."""

WARM_STARTS: dict[str, str] = {
    "v": "a state-only V regressed on the returns, and Q on the one-step backup "
    "r + gamma V(s') of that V",
    "q": "Q(s, a) regressed on the returns (older runs; lets Q read the state off the "
    "action, which then ranks a state's actions by the states they come from)",
}
"""What the Monte-Carlo warm start fits (the ``critic_warm_start`` setting)."""

NETS: dict[str, str] = {
    "mlp": "an MLP of width x depth (MLPField)",
    "resnet": "QGPO's residual score network (ResidualMLPField, 1.6M parameters; "
    "ignores width and depth)",
}

SOLVERS: dict[str, str] = {
    "auto": "midpoint for the OT methods (qipo-ot, bc), dpm2 for the VP ones",
    "midpoint": "RK2, 2 network evaluations per step",
    "heun": "Heun's RK2, 2 network evaluations per step",
    "euler": "1 network evaluation per step",
    "dpm2": "DPM-Solver-2M, 1 network evaluation per step (VP methods only)",
}

PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: about 15-25 minutes on 2 cores for QIPO-OT on hopper-medium.
    "quick": {},
    # The paper's / QGPO's scale: QGPO's residual score network, 15-step DPM-Solver for the
    # VP models, RK2 (midpoint) for QIPO-OT, full dataset, long schedules, QGPO's 500k
    # in-support critic steps on every transition. Days on a CPU; meant for an accelerator.
    "paper": {
        "subset": 0,
        "net": "resnet",
        "batch_size": 4096,
        "bc_epochs": 600,
        "critic_mc_epochs": 0,
        "critic_epochs": 500,
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
"""Named sets of overrides: ``quick`` (the defaults, CPU-sized) and ``paper``."""

# keys of older run directories: renamed ones (old -> new) and the values of keys they lack
_RENAMED: dict[str, str] = {"algo": "method"}
_LEGACY: dict[str, Any] = {
    "q_norm": "none",
    "critic": "in-support",
    "q_trust": "full",
    "reward_scale": "none",
    "critic_warm_start": "q",
}
_LEGACY_VALUES: dict[str, dict[Any, Any]] = {"solver": {"": "auto"}}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (see ``docs/rl.md`` for what each stage does).

    An *epoch* is ``steps_per_epoch`` optimiser steps on batches drawn with replacement
    (the datasets hold a million transitions; a full pass is not a useful unit).
    """

    method: str = setting("qipo-ot", "what to train", choices=METHODS)
    dataset: str = setting(
        "hopper-medium",
        "offline dataset (see `ewfm data list`); built locally first if it is missing",
    )
    seed: int = setting(0, "random seed: data subset, initialisation, batches, evaluation")
    seeds: int = setting(
        1,
        "train K seeds (seed .. seed+K-1) side by side in one program, at most 64; seed j "
        "draws what a run with --seed seed+j draws, except the data subset: every seed "
        "uses the first seed's",
    )
    # -- data
    subset: int = setting(
        100_000,
        "random transitions used by the critic and the support sets (0 = all); the behaviour "
        "model always sees every transition. The in-support critic pre-samples critic_support "
        "actions for each of them (its cost grows with it); iql's cost does not",
    )
    steps_per_epoch: int = setting(
        1000, "optimiser steps per epoch, the unit of every *_epochs setting"
    )
    # -- behaviour model (the warm-up; the policy of bc)
    net: str = setting("mlp", "the behaviour/policy network", choices=NETS)
    width: int = setting(256, "hidden units per layer of the policy (mlp) and energy networks")
    depth: int = setting(4, "hidden layers of the policy network (mlp)")
    lr: float = setting(3e-4, "Adam learning rate of the behaviour model and the energy network")
    batch_size: int = setting(256, "transitions per behaviour-model step")
    ema_decay: float = setting(
        0.999, "decay of the weights' moving average (the EMA is the model that is sampled)"
    )
    bc_epochs: int = setting(25, "epochs of behaviour cloning (the warm-up)")
    # -- critic
    critic: str = setting("in-support", "how the critic is trained", choices=CRITICS)
    reward_scale: str = setting(
        "returns",
        "how the critic's rewards are scaled (applied once, to every critic; the factor is "
        "recorded in obs_stats.json). q_norm spread/state make QIPO's weights free of Q's "
        "unit, but beta_q and cep_beta are in units of 1/Q",
        choices=REWARD_SCALES,
    )
    critic_mc_epochs: int = setting(
        5,
        "warm start: epochs of fitting the dataset's Monte-Carlo returns before Q-learning "
        "(0 = off; what is fitted: critic_warm_start). Without it, 10k TD steps left "
        "hopper's Q at correlation 0.12 with the returns; with the q warm start 0.97",
    )
    critic_warm_start: str = setting(
        "v", "what the Monte-Carlo warm start fits", choices=WARM_STARTS
    )
    critic_epochs: int = setting(
        10, "epochs of the critic's temporal-difference learning (in-support or IQL)"
    )
    critic_width: int = setting(256, "hidden units per layer of each Q (and V) network")
    critic_depth: int = setting(2, "hidden layers of each Q (and V) network")
    critic_layer_norm: bool = setting(
        False, "a LayerNorm after every hidden layer of the critic's Q and V networks"
    )
    critic_lr: float = setting(3e-4, "Adam learning rate of the critic")
    critic_batch: int = setting(256, "transitions per critic step")
    critic_support: int = setting(
        8, "actions drawn from the behaviour model per next state for the Q target (M')"
    )
    gamma: float = setting(0.99, "discount factor, in (0, 1)")
    tau: float = setting(
        0.005, "soft target update: the target networks move this share toward Q each step"
    )
    beta_q: float = setting(
        10.0,
        "inverse temperature of the Q target's softmax over the next state's supports "
        "(0 = their mean, large = their max); in units of 1/Q, so its sharpness depends on "
        "reward_scale",
    )
    expectile: float = setting(
        0.7,
        "iql: the expectile of Q that V fits, in (0, 1): 0.5 = the behaviour policy's value "
        "(SARSA), toward 1 = the best action in the data (IQL's published 0.7)",
    )
    # -- QIPO iterations (Algorithm 2)
    support: int = setting(16, "support actions per state (M) re-drawn at each renewal")
    keep_data_action: bool = setting(
        True,
        "keep the dataset action as the first of the M supports (false = the paper's pure "
        "form; without the anchor the policy can drift away from the data unseen)",
    )
    beta: float = setting(
        1.0,
        "inverse temperature of the weights M softmax(beta Q) over a state's supports; its "
        "unit depends on q_norm. hopper-medium at QIPO epoch 4: 53.0 at 1 vs 42.3 at 0.3",
    )
    q_norm: str = setting(
        "spread",
        "how Q's scale enters the weights. 3 seeds at beta 1, spread vs none: 59.5 vs 57.5 "
        "(hopper), 63.6 vs 55.1 (walker2d), 18.3 vs 15.1 (halfcheetah)",
        choices=Q_NORMS,
    )
    q_trust: str = setting(
        "full",
        "how far the weights trust the critic's ranking of a state's supports (twins: beta x "
        "the twins' agreement, so an unreliable critic falls back toward BC)",
        choices=Q_TRUST,
    )
    qipo_epochs: int = setting(4, "epochs of QIPO (the policy starts from the behaviour model)")
    renew_every: int = setting(
        2,
        "epochs between support renewals (K_renew). Each renewal sharpens the policy toward "
        "mu exp(n beta Q) and Q's errors with it: hopper-medium peaked after 2 renewals "
        "(epoch 4, 53.0) and collapsed by epoch 8 (1.5)",
    )
    qipo_states: int = setting(
        32, "states per QIPO and CEP step, each with its M supports (a batch of states x M)"
    )
    qipo_subset: int = setting(
        20_000,
        "states of the subset that carry support sets (0 = the whole subset); re-drawing M "
        "actions for a million states costs minutes per renewal on a CPU",
    )
    qipo_lr: float = setting(1e-4, "Adam learning rate of the QIPO policy")
    # -- QGPO baseline: CEP energy network + gradient guidance
    cep_epochs: int = setting(5, "qgpo: epochs of contrastive energy prediction (CEP)")
    cep_beta: float = setting(3.0, "qgpo: inverse temperature of CEP's target exp(beta Q)")
    guidance: float = setting(
        0.3,
        "qgpo: scale of the energy gradient added when sampling (`ewfm evaluate --guidance` "
        "re-scores a run at another). hopper-medium, 3 seeds: 0 / 0.1 / 0.3 / 1 / 3 scored "
        "41.0 / 45.8 / 55.0 / 12.2 / 0.9",
    )
    # -- sampling (the policy; support renewal uses the same sampler)
    solver: str = setting("auto", "ODE solver that draws actions from the policy", choices=SOLVERS)
    sample_steps: int = setting(
        0,
        "solver steps per action (0 = automatic: 5 on the OT path, 10 network evaluations; "
        "15 on the VP path, where DPM-Solver with 5 steps loses most of the score)",
    )
    # -- evaluation
    eval_every: int = setting(
        2, "evaluate the policy every this many epochs of the last stage (0 = final only)"
    )
    eval_episodes: int = setting(5, "episodes per seed of each periodic evaluation")
    final_episodes: int = setting(10, "episodes per seed of the final evaluation")
    eval_max_steps: int = setting(1000, "environment steps after which an episode is cut")
    eval_behaviour: bool = setting(
        True, "also score the behaviour model at the end, so every run reports its own BC"
    )

    def __post_init__(self) -> None:
        check_choices(self)
        _check_ranges(self)

    @property
    def path_kind(self) -> str:
        """``"ot"`` for QIPO-OT and BC, ``"vp"`` for QIPO-Diff and QGPO."""
        return "ot" if self.method in ("qipo-ot", "bc") else "vp"

    @property
    def prediction(self) -> str:
        """What the policy network predicts: a velocity (OT path) or the noise (VP path)."""
        return "velocity" if self.path_kind == "ot" else "eps"

    @property
    def policy_solver(self) -> str:
        """The solver that samples the policy (``solver``, with ``auto`` resolved)."""
        if self.solver != "auto":
            return self.solver
        return "midpoint" if self.path_kind == "ot" else "dpm2"

    @property
    def policy_steps(self) -> int:
        """Solver steps: measured, DPM-Solver with 5 steps loses most of a VP policy's score."""
        return self.sample_steps or (5 if self.path_kind == "ot" else 15)


_POSITIVE = (
    "steps_per_epoch", "width", "depth", "batch_size", "critic_width", "critic_depth",
    "critic_batch", "renew_every", "qipo_states", "final_episodes", "eval_max_steps", "seeds",
)  # fmt: skip
_COUNTS = (
    "bc_epochs", "critic_epochs", "critic_mc_epochs", "qipo_epochs", "cep_epochs", "subset",
    "qipo_subset", "eval_every", "eval_episodes",
)  # fmt: skip


def _check_ranges(cfg: TrainConfig) -> None:
    """Refuse impossible numbers with a one-line message naming the fix."""
    for name in ("beta", "beta_q", "cep_beta", "guidance"):
        v = getattr(cfg, name)
        if not 0.0 <= v < math.inf:
            raise ConfigError(f"{name} must be a finite number >= 0, got {v}.")
    for name in ("support", "critic_support"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} (M) must be >= 1, got {getattr(cfg, name)}.")
    if cfg.keep_data_action and cfg.support < 2 and cfg.method.startswith("qipo"):
        raise ConfigError("keep_data_action needs support >= 2 (one data action + samples).")
    for name in _POSITIVE:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
    for name in _COUNTS:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}.")
    if cfg.sample_steps < 0:
        raise ConfigError(f"sample_steps must be >= 0 (0 = automatic), got {cfg.sample_steps}.")
    if not 0.0 < cfg.gamma < 1.0:
        raise ConfigError(f"gamma must lie in (0, 1), got {cfg.gamma}.")
    if not 0.0 < cfg.tau <= 1.0:
        raise ConfigError(f"tau must lie in (0, 1], got {cfg.tau}.")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ConfigError(f"ema_decay must lie in [0, 1), got {cfg.ema_decay}.")
    if cfg.solver == "dpm2" and cfg.path_kind == "ot":
        raise ConfigError("solver dpm2 needs a VP method (qipo-diff or qgpo); use midpoint.")
    if cfg.seeds > 64:
        raise ConfigError(f"seeds must be at most 64 (one vmapped program), got {cfg.seeds}.")
    _check_critic(cfg)


def _check_critic(cfg: TrainConfig) -> None:
    """Refuse critic settings that the chosen critic would ignore or cannot use."""
    if not 0.0 < cfg.expectile < 1.0:
        raise ConfigError(f"expectile must lie in (0, 1), got {cfg.expectile}.")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key, critic in CRITIC_ONLY.items():
        if cfg.critic != critic and getattr(cfg, key) != defaults[key]:
            raise ConfigError(
                f"{key} is a setting of the {critic} critic but this run uses critic "
                f"{cfg.critic}; set critic = {critic} or drop {key}."
            )
    if cfg.critic == "iql" and cfg.critic_warm_start == "q" and cfg.critic_mc_epochs:
        raise ConfigError(
            "critic_warm_start q (fitting Q(s, a) to returns) is kept for older in-support "
            "runs only; use critic_warm_start v with iql."
        )


def _refuse_renamed(values: Mapping[str, Any], where: str) -> None:
    for old, new in _RENAMED.items():
        if old in values:
            raise ConfigError(f"{where}: {old!r} is now called {new!r}; rename the key.")


def resolve_config(
    preset: str = "quick",
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The run's settings: the ``preset``, then the TOML ``config_file`` (flat keys or a
    ``[train]`` table), then ``overrides`` (``None`` values ignored)."""
    values = dict(load_toml(config_file, "train")) if config_file is not None else {}
    _refuse_renamed(values, f"config file {config_file}")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _refuse_renamed(given, "overrides")
    return _resolve_config(TrainConfig, PRESETS, preset, None, {**values, **given})


def read_config(data: Mapping[str, Any] | str | os.PathLike) -> TrainConfig:
    """A run's ``config.json`` (path or dict), older ones included: ``algo`` is read as
    ``method``, ``solver ""`` as ``auto``, and keys they lack take the value they ran with
    (``q_norm`` ``none``: runs from before it existed used the paper's weights)."""
    if isinstance(data, Mapping):
        values: Mapping[str, Any] = data
    else:
        p = Path(data)
        if not p.is_file():
            raise ConfigError(f"{p.parent} holds no config.json: not an ewfm train run.")
        values = json.loads(p.read_text())
    out = {_RENAMED.get(k, k): v for k, v in values.items()}
    for key, table in _LEGACY_VALUES.items():
        if key in out and out[key] in table:
            out[key] = table[out[key]]
    return config_from_json(TrainConfig, out, legacy=_LEGACY)


def resume_config(
    out: str | os.PathLike,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The config of the run in ``out`` to resume, with ``config_file`` and ``overrides``
    applied on top (`train` then refuses any that differ from what the run was made with,
    naming the key). The preset is not used: the run's ``config.json`` holds everything."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{out} holds no config.json: nothing to resume; drop --resume.")
    base = dataclasses.asdict(read_config(path))
    if config_file is not None:
        values = load_toml(config_file, "train")
        _refuse_renamed(values, f"config file {config_file}")
        base.update(values)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _refuse_renamed(given, "overrides")
    return _resolve_config(TrainConfig, {"run": base}, "run", None, given)
