"""The loop every stage of `ewfm train` shares: a `Stage` declares how it trains, and
`run_stage` trains it (or resumes it from its checkpoint).

A `Stage` declares how it trains (`Stage.recipe`: loss, optimiser, batch size, EMA, which
data carry a seed axis), how many epochs, its initial state, its data per epoch and what it
hands to later stages (`Context`: the behaviour model, the critic's Q network, the policy).
`run_stage` is the one loop they share: one vmapped, jitted epoch per step, a checkpoint
after every epoch (resumable), metrics, a progress bar and periodic evaluations.
"""

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from .._train import TrainState, load_checkpoint, make_epoch, save_checkpoint
from ._config import TrainConfig
from ._context import Context, Dims, fold


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
