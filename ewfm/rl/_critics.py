"""The critic stages of `ewfm train`, one per choice of the ``critic`` setting.

A critic stage trains a Q network that later stages score support actions with; its
`CriticStage.q_of` says where that network is (any module with ``min(s, a)``, like
`ewfm.TwinQ`). Every critic trains on the same data: the ``subset`` transitions, rewards
scaled once by ``reward_scale`` (`CriticStage.prepare`), and starts with the same optional
Monte-Carlo warm start (``critic_mc_epochs`` of ``critic_warm_start``).

- `InSupportCritic` (``in-support``): in-support softmax Q-learning (QGPO) on supports
  pre-sampled from the behaviour EMA.
- `IqlCritic` (``iql``): IQL's expectile V and twin Q, on the dataset's own actions.

A new critic is a new `CriticStage` here, registered in `CRITIC_STAGES` under a new choice
of the ``critic`` setting (``_config.CRITICS``); nothing else changes.
"""

import functools
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from .._train import TrainState, init_state, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._context import Dims
from ._critic import (
    CriticBatch,
    ReturnBatch,
    TransitionBatch,
    WarmBatch,
    critic_loss,
    discounted_returns,
    iql_loss,
    make_critic,
    return_loss,
    soft_target_optimizer,
    value_warm_loss,
)
from ._loop import Recipe, Stage


class CriticStage(Stage):
    """A critic: trains a Q network that later stages score support actions with.

    `prepare` builds the transitions of the ``subset`` (rewards times the run's
    ``reward_scale`` factor, the one place rewards are scaled) and their Monte-Carlo
    discounted returns (from the scaled rewards). The first ``critic_mc_epochs`` epochs are
    the warm start (phase ``warm``, or ``returns`` for the older Q(s, a) fit), the rest the
    critic's own phase (``phases[0]``) on `td_data`.
    """

    name = stream = "critic"
    init_fold = 1

    @staticmethod
    def q_of(state: TrainState) -> Any:
        """The (stacked) Q network in the trained state: a module with ``min(s, a)``, like
        `ewfm.TwinQ` (see `ewfm.rl.q_values`)."""
        return state.model.q  # the online twins (the target copy only serves the TD target)

    def finish(self, state: TrainState) -> None:
        self.ctx.qnet = self.q_of(state)

    @classmethod
    def has_value(cls, cfg: TrainConfig) -> bool:
        """Whether the critic carries a state-value network (IQL; the V warm start, for the
        critics that have a ``warm`` phase)."""
        return "warm" in cls.phases and cfg.critic_mc_epochs > 0 and cfg.critic_warm_start == "v"

    @classmethod
    def epochs(cls, cfg: TrainConfig) -> int:
        return cfg.critic_mc_epochs + cfg.critic_epochs

    @classmethod
    def fresh(cls, cfg: TrainConfig, dims: Dims, keys: Array) -> TrainState:
        opt = cls.program(cfg)[0]
        make = functools.partial(
            make_critic, dims.obs, dims.act, width=cfg.critic_width, depth=cfg.critic_depth,
            value=cls.has_value(cfg), layer_norm=cfg.critic_layer_norm,
        )  # fmt: skip
        return eqx.filter_vmap(lambda k: init_state(make(key=k), opt))(keys)

    @classmethod
    def warm_recipe(cls, cfg: TrainConfig, phase: str) -> Recipe | None:
        """The warm start's recipe (phase ``warm`` or ``returns``), else None."""
        opt = soft_target_optimizer(optax.adam(cfg.critic_lr), cfg.tau)
        if phase == "returns":
            return Recipe(opt, return_loss, cfg.critic_batch, 0.0, None)
        if phase == "warm":
            loss = functools.partial(value_warm_loss, gamma=cfg.gamma)
            return Recipe(opt, loss, cfg.critic_batch, 0.0, None)
        return None

    def prepare(self) -> None:
        cfg, data = self.cfg, self.ctx.data
        tr, idx = data.transitions, data.subset
        assert data.reward_scale is not None  # set for every method with a critic
        rewards = np.asarray(tr.rewards, np.float64) * data.reward_scale  # scaled once, here
        sub = lambda x: jnp.asarray(np.asarray(x, np.float32)[idx])
        s, a = data.states[idx], data.actions[idx]
        ns = data.norm(np.asarray(tr.next_observations)[idx])
        self.transitions = TransitionBatch(s, a, sub(rewards), ns, sub(tr.terminals))
        self.returns = sub(discounted_returns(rewards, tr.terminals, tr.timeouts, cfg.gamma))
        self.phase = self.phases[0]

    def batch(self, epoch: int, state: TrainState) -> tuple[Any, dict[str, Any]]:
        """The warm start's data in the first ``critic_mc_epochs`` epochs, then `td_data`;
        sets `phase`, the program `epoch` trains with."""
        if epoch >= self.cfg.critic_mc_epochs:
            self.phase, data = self.phases[0], self.td_data()
        elif self.cfg.critic_warm_start == "q":
            self.phase, data = "returns", ReturnBatch(*self.transitions[:2], self.returns)
        else:
            self.phase, data = "warm", WarmBatch(*self.transitions, self.returns)
        return data, {"phase": self.phase}

    def td_data(self) -> Any:
        """The data of the temporal-difference epochs."""
        return self.transitions

    def epoch(self, state: TrainState, data: Any, keys: Array) -> tuple[TrainState, Array]:
        return self.program(self.cfg, self.phase)[1](state, data, keys)


class InSupportCritic(CriticStage):
    """Twin Q networks trained by in-support softmax Q-learning (QGPO, `critic_loss`) with
    ``critic_support`` actions per next state pre-sampled once from the behaviour EMA
    (``critic_supports.eqx``), after the warm start."""

    phases = ("td", "returns", "warm")
    files = ("critic_supports",)

    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        warm = cls.warm_recipe(cfg, phase)
        if warm is not None:
            return warm
        opt = soft_target_optimizer(optax.adam(cfg.critic_lr), cfg.tau)
        loss = lambda m, b, k: critic_loss(m, b, k, gamma=cfg.gamma, beta_q=cfg.beta_q)
        axes = CriticBatch(None, None, None, None, None, 0)  # pyright: ignore[reportArgumentType]
        return Recipe(opt, loss, cfg.critic_batch, 0.0, axes)

    def prepare(self) -> None:
        super().prepare()
        self.td = CriticBatch(*self.transitions, self._next_supports(self.transitions[3]))

    def td_data(self) -> Any:
        return self.td

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


class IqlCritic(CriticStage):
    """IQL (Kostrikov et al. 2021): V by expectile regression of the target twin Q on the
    dataset's pairs, Q by ``r + gamma V(s')``, both in one step (`iql_loss`), on the
    dataset's own actions only (nothing is pre-sampled), after the warm start."""

    phases = ("td", "warm")

    @classmethod
    def has_value(cls, cfg: TrainConfig) -> bool:
        return True

    @classmethod
    def recipe(cls, cfg: TrainConfig, phase: str) -> Recipe:
        warm = cls.warm_recipe(cfg, phase)
        if warm is not None:
            return warm
        opt = soft_target_optimizer(optax.adam(cfg.critic_lr), cfg.tau)
        loss = functools.partial(iql_loss, gamma=cfg.gamma, expectile=cfg.expectile)
        return Recipe(opt, loss, cfg.critic_batch, 0.0, None)


CRITIC_STAGES: dict[str, type[CriticStage]] = {"in-support": InSupportCritic, "iql": IqlCritic}
"""The critic stages by the name the ``critic`` setting takes."""
