"""The stages of `ewfm train`: each owns its loss, optimiser, data and resume state.

Every stage is a `Stage` trained by `run_stage` (``_loop.py``: the loop they share, with
checkpoints, metrics, progress and periodic evaluations).

- `Behaviour`: a state-conditioned field on (s, a): CFM on the OT path (QIPO-OT, BC) or
  denoising on the VP path (QIPO-Diff, QGPO). For ``bc`` this is the policy.
- the critic: one of `CRITIC_STAGES` (``_critics.py``), chosen by the ``critic`` setting.
- `Qipo`: Algorithm 2 (docs/method.md §9): every ``renew_every`` epochs M supports per
  state are re-drawn from the CURRENT EMA policy and scored once by the critic; the epochs
  minimise ``L_QFM`` (5.3) / ``L_QD`` (5.2).
- `Cep` (QGPO): an energy network by contrastive energy prediction on behaviour supports.

A new critic is a new `CriticStage` in ``_critics.py``, registered in `CRITIC_STAGES` under
a new choice of the ``critic`` setting (``_config.CRITICS``); nothing else changes.
"""

import time
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array

from .._losses import cep_loss, cfm_loss, denoising_loss
from .._train import TrainState, init_state, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._context import Dims, fold
from ._critics import (
    CRITIC_STAGES as CRITIC_STAGES,
    CriticStage as CriticStage,
    InSupportCritic as InSupportCritic,
    IqlCritic as IqlCritic,
)
from ._loop import (
    Recipe as Recipe,
    Stage as Stage,
    StopTraining as StopTraining,
    program_key as program_key,
    run_stage as run_stage,
)
from ._policy import make_path, per_seed, seed_slice, stacked_energy_nets, stacked_fields
from ._qipo import (
    SupportSet,
    _q_values_jit as _score_q,
    make_qipo_loss,
    renew_supports,
    scale_q,
    score_supports,
    support_reliability,
    support_stats,
)

# -- the stages ------------------------------------------------------------------------------------


class Behaviour(Stage):
    """The behaviour model: the warm-up of every method and the policy of ``bc``."""

    name = stream = "behaviour"
    init_fold = 0

    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        path = make_path(cfg)
        if cfg.path_kind == "ot":
            loss = lambda m, b, k: cfm_loss(m, path, b[1], k, cond=b[0])
        else:
            loss = lambda m, b, k: denoising_loss(m, path, b[1], k, cond=b[0])
        return Recipe(optax.adam(cfg.lr), loss, cfg.batch_size, cfg.ema_decay, None)

    @classmethod
    def epochs(cls, cfg: TrainConfig) -> int:
        return cfg.bc_epochs

    @classmethod
    def fresh(cls, cfg: TrainConfig, dims: Dims, keys: Array) -> TrainState:
        opt = cls.program(cfg)[0]
        fields = stacked_fields(cfg, dims.obs, dims.act, keys)
        return eqx.filter_vmap(lambda f: init_state(f, opt))(fields)

    def batch(self, epoch: int, state: TrainState) -> tuple[Any, dict[str, Any]]:
        return (self.ctx.data.states, self.ctx.data.actions), {}

    def policy(self, state: TrainState) -> tuple[Any, Any]:
        return state.ema, None

    def finish(self, state: TrainState) -> None:
        self.ctx.behaviour = state
        self.ctx.policy = (state.ema, None)


def _support_set_like(cfg: TrainConfig, dims: Dims) -> SupportSet:
    n, m = dims.supports, cfg.support
    return SupportSet(
        jnp.zeros((n, dims.obs)),
        jnp.zeros((cfg.seeds, n, m, dims.act)),
        jnp.zeros((cfg.seeds, n, m)),
    )


class Cep(Stage):
    """QGPO's energy network, trained by contrastive energy prediction (``cep_loss``) on
    ``support`` behaviour actions per state with energies ``-Q``; the policy is the
    behaviour model guided by the energy's gradient."""

    name = stream = "cep"
    init_fold = 2
    files = ("cep_supports",)

    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        path = make_path(cfg)
        loss = lambda m, b, k: cep_loss(m, path, b.actions, -b.q, cfg.cep_beta, k, cond=b.states)
        axes = SupportSet(None, 0, 0)  # pyright: ignore[reportArgumentType]
        return Recipe(optax.adam(cfg.lr), loss, cfg.qipo_states, cfg.ema_decay, axes)

    @classmethod
    def epochs(cls, cfg: TrainConfig) -> int:
        return cfg.cep_epochs

    @classmethod
    def fresh(cls, cfg: TrainConfig, dims: Dims, keys: Array) -> TrainState:
        opt = cls.program(cfg)[0]
        nets = stacked_energy_nets(cfg, dims.obs, dims.act, keys)
        return eqx.filter_vmap(lambda e: init_state(e, opt))(nets)

    def prepare(self) -> None:
        ctx, cfg = self.ctx, self.cfg
        s_q, _ = ctx.support_states()
        path = ctx.run.stage_path(self.files[0])
        like = jnp.zeros((cfg.seeds, ctx.dims.supports, cfg.support, ctx.dims.act), jnp.float32)
        if path.exists():
            sup, _ = load_checkpoint(path, like)
        else:
            sup = ctx.behaviour_supports(s_q, fold(ctx.keys["cep"], 1), cfg.support)
            save_checkpoint(path, sup, {})
        qnet = ctx.qnet
        q = per_seed(lambda j: score_supports(seed_slice(qnet, j), s_q, sup[j]), cfg.seeds)
        self.set = SupportSet(s_q, sup, q)

    def batch(self, epoch: int, state: TrainState) -> tuple[Any, dict[str, Any]]:
        return self.set, {}

    def policy(self, state: TrainState) -> tuple[Any, Any]:
        assert self.ctx.behaviour is not None
        return self.ctx.behaviour.ema, state.ema

    def finish(self, state: TrainState) -> None:
        self.ctx.policy = self.policy(state)


class Qipo(Stage):
    """QIPO iterations (Algorithm 2): the policy starts from the behaviour EMA; every
    ``renew_every`` epochs its supports are re-drawn from the current EMA policy (the set
    in use is checkpointed with the state) and Q enters the weights scaled by ``q_norm``."""

    name = stream = "qipo"

    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        loss = make_qipo_loss(make_path(cfg), cfg.beta, cfg.prediction)
        axes = SupportSet(None, 0, 0)  # pyright: ignore[reportArgumentType]
        return Recipe(optax.adam(cfg.qipo_lr), loss, cfg.qipo_states, cfg.ema_decay, axes)

    @classmethod
    def epochs(cls, cfg: TrainConfig) -> int:
        return cfg.qipo_epochs

    @classmethod
    def fresh(cls, cfg: TrainConfig, dims: Dims, keys: Array) -> TrainState:
        return cls.from_model(cfg, stacked_fields(cfg, dims.obs, dims.act, keys))

    @classmethod
    def from_model(cls, cfg: TrainConfig, fields: Any) -> TrainState:
        opt = cls.program(cfg)[0]
        return eqx.filter_vmap(lambda m: init_state(m, opt))(fields)

    @classmethod
    def extra_like(cls, cfg: TrainConfig, dims: Dims) -> SupportSet:
        return _support_set_like(cfg, dims)

    def prepare(self) -> None:
        self.states, data_actions = self.ctx.support_states()
        self.keep = data_actions if self.cfg.keep_data_action else None
        self.raw: SupportSet | None = None  # the current support set, Q as the critic gave it
        self.train: SupportSet | None = None  # the same, Q scaled by q_norm: trained on
        self.trust: Array | None = None  # q_trust twins: each seed's ranking reliability

    def initial(self) -> TrainState:
        assert self.ctx.behaviour is not None
        return self.from_model(self.cfg, self.ctx.behaviour.ema)

    def restore(self, extra: SupportSet) -> None:
        self._use(extra)

    def _use(self, raw: SupportSet) -> None:
        self.raw = raw
        q = scale_q(raw.q, self.cfg.q_norm)
        self.trust = None
        if self.cfg.q_trust == "twins":  # beta x reliability of each seed's ranking
            qnet = self.ctx.qnet
            rel = lambda j: support_reliability(seed_slice(qnet, j), raw.states, raw.actions[j])
            trust = per_seed(rel, self.cfg.seeds)
            q, self.trust = q * trust[:, None, None], trust
        self.train = raw._replace(q=q)

    def batch(self, epoch: int, state: TrainState) -> tuple[Any, dict[str, Any]]:
        info: dict[str, Any] = {}
        if epoch % self.cfg.renew_every == 0 or self.raw is None:
            ts = time.perf_counter()
            self._use(self._renew(epoch, state))
            assert self.raw is not None and self.train is not None
            info.update(support_stats(self.raw, self.train.q, self.cfg.beta))
            if self.trust is not None:
                info["q_trust"] = [float(x) for x in np.asarray(self.trust)]
            info["renew_seconds"] = time.perf_counter() - ts
        return self.train, info

    def _renew(self, epoch: int, state: TrainState) -> SupportSet:
        ctx, cfg, qnet = self.ctx, self.cfg, self.ctx.qnet
        keys = ctx.keys["qipo"]
        renew = lambda j: renew_supports(
            seed_slice(state, j), ctx.sampler, _score_q, seed_slice(qnet, j), self.states,
            jr.fold_in(keys[j], 10_000 + epoch), m=cfg.support, action_dim=ctx.dims.act,
            data_actions=self.keep,
        )  # fmt: skip
        sets = per_seed(renew, cfg.seeds)
        return SupportSet(self.states, sets.actions, sets.q)

    def extra(self) -> SupportSet | None:
        return self.raw

    def policy(self, state: TrainState) -> tuple[Any, Any]:
        return state.ema, None

    def finish(self, state: TrainState) -> None:
        self.ctx.policy = (state.ema, None)


STAGES: dict[str, type[Stage]] = {s.name: s for s in (Behaviour, InSupportCritic, Cep, Qipo)}
"""Every stage by its name (its checkpoint is ``checkpoints/<name>.eqx``); ``critic`` is the
default critic, `stage_class` a run's own."""


def stage_class(name: str, cfg: TrainConfig) -> type[Stage]:
    """The stage that trains the checkpoint ``name`` in a run of ``cfg`` (every critic
    writes ``critic.eqx``: the one ``cfg.critic`` chooses)."""
    return CRITIC_STAGES[cfg.critic] if name == CriticStage.name else STAGES[name]


def method_stages(cfg: TrainConfig) -> list[type[Stage]]:
    """The stages ``cfg.method`` trains, in order."""
    if cfg.method == "bc":
        return [Behaviour]
    last = Cep if cfg.method == "qgpo" else Qipo
    return [Behaviour, CRITIC_STAGES[cfg.critic], last]
