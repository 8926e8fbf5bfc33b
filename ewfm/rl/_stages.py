"""The stages of `ewfm train`: each owns its loss, optimiser, data and resume state.

A `Stage` declares how it trains (`Stage.recipe`: loss, optimiser, batch size, EMA, which
data carry a seed axis), how many epochs, its initial state, its data per epoch and what it
hands to later stages (`Context`: the behaviour model, the critic's Q network, the policy).
`run_stage` is the one loop they share: one vmapped, jitted epoch per step, a checkpoint
after every epoch (resumable), metrics, a progress bar and periodic evaluations.

- `Behaviour`: a state-conditioned field on (s, a): CFM on the OT path (QIPO-OT, BC) or
  denoising on the VP path (QIPO-Diff, QGPO). For ``bc`` this is the policy.
- `InSupportCritic`: twin Q networks, first regressed on Monte-Carlo returns, then trained
  by in-support softmax Q-learning on supports pre-sampled from the behaviour EMA.
- `Qipo`: Algorithm 2 (docs/method.md §9): every ``renew_every`` epochs M supports per
  state are re-drawn from the CURRENT EMA policy and scored once by the critic; the epochs
  minimise ``L_QFM`` (5.3) / ``L_QD`` (5.2).
- `Cep` (QGPO): an energy network by contrastive energy prediction on behaviour supports.

A new critic is a new `CriticStage` here (its `CriticStage.q_of` gives the Q network),
registered in `CRITIC_STAGES` under a new
choice of the ``critic`` setting (``_config.CRITICS``); nothing else changes.
"""

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from .._losses import cep_loss, cfm_loss, denoising_loss
from .._train import TrainState, init_state, load_checkpoint, make_epoch, save_checkpoint
from ._config import TrainConfig
from ._context import Context, Dims, fold
from ._critic import (
    CriticBatch,
    ReturnBatch,
    critic_loss,
    discounted_returns,
    make_critic,
    return_loss,
    soft_target_optimizer,
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


class StopTraining(Exception):
    """Raised by the test hook ``stop_after`` to simulate a kill right after a checkpoint."""


# -- a stage and the loop they share -----------------------------------------------------------


class Recipe(NamedTuple):
    """How a stage trains: what `ewfm.make_epoch` needs, and which data carry a seed axis."""

    optimizer: optax.GradientTransformation
    loss: Callable[[Any, Any, PRNGKeyArray], Any]
    batch_size: int
    ema_decay: float
    data_axes: Any  # vmap in_axes of the data: None = shared by all seeds


def program_key(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without the settings that do not change a stage's program (better caching)."""
    return dataclasses.replace(cfg, seed=0, seeds=1, dataset="", eval_every=0, final_episodes=1)


@functools.lru_cache(maxsize=32)
def _program(stage: type["Stage"], phase: str, cfg: TrainConfig) -> tuple[Any, Callable]:
    r = stage.recipe(cfg, phase)
    epoch = make_epoch(
        r.loss, r.optimizer, batch_size=r.batch_size, steps=cfg.steps_per_epoch,
        ema_decay=r.ema_decay,
    )  # fmt: skip
    vepoch = eqx.filter_vmap(epoch, in_axes=(eqx.if_array(0), r.data_axes, 0))
    return r.optimizer, eqx.filter_jit(vepoch)


class Stage:
    """One stage of a run. Subclasses set `name` and `stream` (its PRNG stream in `Keys`)
    and implement `recipe`, `epochs`, `fresh` and `batch`; the rest has defaults."""

    name: ClassVar[str]
    stream: ClassVar[str]
    init_fold: ClassVar[int] = 0  # which fold of the "init" stream initialises it
    phases: ClassVar[tuple[str, ...]] = ("",)  # programs it trains with (`recipe`'s phase)
    files: ClassVar[tuple[str, ...]] = ()  # other checkpoints it writes (read back on resume)

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.cfg = ctx.cfg

    # -- what a stage declares
    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        raise NotImplementedError

    @classmethod
    def epochs(cls, cfg: TrainConfig) -> int:
        raise NotImplementedError

    @classmethod
    def fresh(cls, cfg: TrainConfig, dims: Dims, keys: Array) -> TrainState:
        """A new stacked state, one per seed key."""
        raise NotImplementedError

    @classmethod
    def program(cls, cfg: TrainConfig, phase: str | None = None) -> tuple[Any, Callable]:
        """The optimiser and the jitted epoch, vmapped over seeds, cached per config: the
        epoch takes states and keys with a leading seed axis."""
        return _program(cls, cls.phases[0] if phase is None else phase, program_key(cfg))

    @classmethod
    def extra_like(cls, cfg: TrainConfig, dims: Dims) -> Any:
        """The structure of what the checkpoint keeps beside the state (None: nothing)."""
        return None

    @classmethod
    def like(cls, cfg: TrainConfig, dims: Dims) -> tuple[Any, Any]:
        """The structure of this stage's checkpoint, for `ewfm.load_checkpoint`."""
        return cls.fresh(cfg, dims, jr.split(jr.key(0), cfg.seeds)), cls.extra_like(cfg, dims)

    # -- what it does in a run
    def prepare(self) -> None:
        """Data that do not change during the stage (drawn once, or read back)."""

    def initial(self) -> TrainState:
        return self.fresh(self.cfg, self.ctx.dims, fold(self.ctx.keys["init"], self.init_fold))

    def restore(self, extra: Any) -> None:
        """Take back what `extra` saved (a resumed stage)."""

    def batch(self, epoch: int, state: TrainState) -> tuple[Any, dict[str, Any]]:
        """The data of epoch ``epoch`` (0-based) and what to record about them."""
        raise NotImplementedError

    def epoch(self, state: TrainState, data: Any, keys: Array) -> tuple[TrainState, Array]:
        return self.program(self.cfg)[1](state, data, keys)

    def extra(self) -> Any:
        """What the checkpoint keeps beside the state."""
        return None

    def policy(self, state: TrainState) -> tuple[Any, Any] | None:
        """(field, energy net) to evaluate during this stage, when it is the last one."""
        return None

    def finish(self, state: TrainState) -> None:
        """Hand the trained state to later stages (through the context)."""


def run_stage(stage: Stage) -> None:
    """Train ``stage`` (or resume it from its checkpoint), checkpointing every epoch."""
    ctx, cfg, name = stage.ctx, stage.cfg, stage.name
    t0 = time.perf_counter()
    stage.prepare()
    state = stage.initial()
    path, epochs, start = ctx.run.stage_path(name), stage.epochs(cfg), 0
    if path.exists():
        (state, extra), meta = load_checkpoint(path, (state, stage.extra_like(cfg, ctx.dims)))
        start, ctx.history = int(meta["epoch"]), list(meta["history"]) or ctx.history
        stage.restore(extra)
    keys = ctx.keys[stage.stream]
    task = ctx.bars.task(name, epochs, start) if epochs > start else None
    for e in range(start, epochs):
        data, info = stage.batch(e, state)
        ts = time.perf_counter()
        state, losses = stage.epoch(state, data, fold(keys, e))
        losses = np.asarray(losses)  # [seeds, steps]
        m = _epoch_record(name, e, losses, time.perf_counter() - ts)
        m.update(info)
        m.update(_periodic_eval(stage, e + 1, state) or {})
        ctx.history.append(m)
        save_checkpoint(path, (state, stage.extra()), {"epoch": e + 1, "history": ctx.history})
        ctx.run.write_metrics(ctx.history)
        if task is not None:
            task.advance(loss=m["loss"], score=m.get("score_mean"))
        if ctx.stop_after is not None and ctx.stop_after == (name, e + 1):
            raise StopTraining(f"stopped after {name} epoch {e + 1}")
    stage.finish(state)
    ctx.seconds[name] = time.perf_counter() - t0


def _epoch_record(name: str, e: int, losses: np.ndarray, dt: float) -> dict[str, Any]:
    loss = float(losses.mean())
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"{name}: the loss became {loss} in epoch {e + 1}; lower the learning rate."
        )
    m: dict[str, Any] = {"stage": name, "epoch": e + 1, "loss": loss, "seconds": dt}
    m["steps_per_s"] = losses.shape[1] / dt  # per seed; K seeds run these steps side by side
    if losses.shape[0] > 1:
        m["seed_losses"] = [float(x) for x in losses.mean(axis=1)]
    return m


def _periodic_eval(stage: Stage, epoch: int, state: TrainState) -> dict[str, Any] | None:
    """Every ``eval_every`` epochs of the last stage (not its final epoch: the final
    evaluation scores that), save the policy and score it."""
    ctx, cfg = stage.ctx, stage.cfg
    if stage.name != ctx.last or not cfg.eval_every or not cfg.eval_episodes:
        return None
    if epoch % cfg.eval_every or epoch == stage.epochs(cfg):
        return None
    to_eval = stage.policy(state)
    if to_eval is None:
        return None
    field, energy_net = to_eval
    eval_path = ctx.run.ckpt / f"eval_{stage.name}_{epoch:04d}.eqx"
    save_checkpoint(eval_path, (field, energy_net), {"epoch": epoch})
    return ctx.evaluate(field, energy_net, cfg.eval_episodes, epoch)


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


class CriticStage(Stage):
    """A critic: trains a Q network that later stages score support actions with."""

    @staticmethod
    def q_of(state: TrainState) -> Any:
        """The (stacked) Q network in the trained state: a module with ``min(s, a)``, like
        `ewfm.TwinQ` (see `ewfm.rl.q_values`)."""
        raise NotImplementedError

    def finish(self, state: TrainState) -> None:
        self.ctx.qnet = self.q_of(state)


class InSupportCritic(CriticStage):
    """Twin Q networks: ``critic_mc_epochs`` of regression on Monte-Carlo returns (a warm
    start), then in-support softmax Q-learning (QGPO) with ``critic_support`` actions per
    next state pre-sampled once from the behaviour EMA (``critic_supports.eqx``)."""

    name = stream = "critic"
    init_fold = 1
    phases = ("td", "returns")
    files = ("critic_supports",)

    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        opt = soft_target_optimizer(optax.adam(cfg.critic_lr), cfg.tau)
        if phase == "returns":
            return Recipe(opt, return_loss, cfg.critic_batch, 0.0, None)
        loss = lambda m, b, k: critic_loss(m, b, k, gamma=cfg.gamma, beta_q=cfg.beta_q)
        axes = CriticBatch(None, None, None, None, None, 0)  # pyright: ignore[reportArgumentType]
        return Recipe(opt, loss, cfg.critic_batch, 0.0, axes)

    @classmethod
    def epochs(cls, cfg: TrainConfig) -> int:
        return cfg.critic_mc_epochs + cfg.critic_epochs

    @classmethod
    def fresh(cls, cfg: TrainConfig, dims: Dims, keys: Array) -> TrainState:
        opt = cls.program(cfg)[0]
        w, d = cfg.critic_width, cfg.critic_depth
        return eqx.filter_vmap(
            lambda k: init_state(make_critic(dims.obs, dims.act, width=w, depth=d, key=k), opt)
        )(keys)

    def prepare(self) -> None:
        cfg, data = self.cfg, self.ctx.data
        tr, idx = data.transitions, data.subset
        sub = lambda x: jnp.asarray(np.asarray(x, np.float32)[idx])
        s_sub, a_sub = data.states[idx], data.actions[idx]
        ns_sub = data.norm(np.asarray(tr.next_observations)[idx])
        next_sup = self._next_supports(ns_sub)
        self.td = CriticBatch(s_sub, a_sub, sub(tr.rewards), ns_sub, sub(tr.terminals), next_sup)
        returns = discounted_returns(tr.rewards, tr.terminals, tr.timeouts, cfg.gamma)
        self.returns = ReturnBatch(s_sub, a_sub, jnp.asarray(returns[idx], jnp.float32))

    def _next_supports(self, next_states: Array) -> Array:
        ctx, cfg = self.ctx, self.cfg
        shape = (cfg.seeds, ctx.dims.subset, cfg.critic_support, ctx.dims.act)
        like = jnp.zeros(shape, jnp.float32)
        path = ctx.run.stage_path(self.files[0])
        if path.exists():
            return load_checkpoint(path, like)[0]
        ts = time.perf_counter()
        sup = ctx.behaviour_supports(next_states, ctx.keys["critic_support"], cfg.critic_support)
        sup = jax.block_until_ready(sup)
        save_checkpoint(path, sup, {"seconds": time.perf_counter() - ts})
        ctx.log(f"critic supports: {sup.shape} in {time.perf_counter() - ts:.0f} s")
        return sup

    def batch(self, epoch: int, state: TrainState) -> tuple[Any, dict[str, Any]]:
        if epoch < self.cfg.critic_mc_epochs:
            return self.returns, {"phase": "returns"}
        return self.td, {"phase": "td"}

    def epoch(self, state: TrainState, data: Any, keys: Array) -> tuple[TrainState, Array]:
        phase = "returns" if isinstance(data, ReturnBatch) else "td"
        return self.program(self.cfg, phase)[1](state, data, keys)

    @staticmethod
    def q_of(state: TrainState) -> Any:
        return state.model.q  # the online twins (the target copy only serves the TD target)


CRITIC_STAGES: dict[str, type[CriticStage]] = {"in-support": InSupportCritic}
"""The critic stages by the name the ``critic`` setting takes."""


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


STAGES: dict[str, type[Stage]] = {
    s.name: s for s in (Behaviour, *CRITIC_STAGES.values(), Cep, Qipo)
}
"""Every stage by its name (its checkpoint is ``checkpoints/<name>.eqx``)."""


def method_stages(cfg: TrainConfig) -> list[type[Stage]]:
    """The stages ``cfg.method`` trains, in order."""
    if cfg.method == "bc":
        return [Behaviour]
    last = Cep if cfg.method == "qgpo" else Qipo
    return [Behaviour, CRITIC_STAGES[cfg.critic], last]
