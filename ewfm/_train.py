"""The one training loop: optax, whole epochs fused into one jitted ``lax.scan``, EMA, checkpoints.

Toy models, behaviour models, critics, QIPO and the baselines all train through `fit`.
A *loss function* is ``loss_fn(model, batch, key) -> scalar`` where ``batch`` is a slice of
``data`` (any pytree of arrays sharing a leading axis). With more than one JAX device, the
batch is sharded over all of them (data parallel) and parameters are replicated.
"""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ._experiment import Progress, atomic_path

LossFn = Callable[[Any, Any, PRNGKeyArray], Float[Array, ""]]


class TrainState(eqx.Module):
    """Everything that changes during training: model, EMA model, optimiser state, step."""

    model: PyTree
    ema: PyTree
    opt_state: PyTree
    step: Int[Array, ""]


class FitResult(eqx.Module):
    """What `fit` returns: the final state (``state.model``, ``state.ema``) and metrics."""

    state: TrainState
    history: list[dict[str, float]] = eqx.field(static=True)


def init_state(model: PyTree, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh `TrainState`: the EMA starts equal to the model."""
    params = eqx.filter(model, eqx.is_inexact_array)
    return TrainState(model, model, optimizer.init(params), jnp.zeros((), jnp.int32))


def _data_sharding(batch_size: int) -> jax.sharding.NamedSharding | None:
    devices = jax.devices()
    if len(devices) < 2:
        return None
    if batch_size % len(devices):
        raise ValueError(
            f"batch_size {batch_size} must be divisible by the {len(devices)} devices for "
            "data-parallel training; change batch_size."
        )
    mesh = jax.sharding.Mesh(devices, ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def make_epoch(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    batch_size: int,
    steps: int | None = None,
    ema_decay: float = 0.999,
    unroll: int | bool = 1,
) -> Callable[[TrainState, PyTree, PRNGKeyArray], tuple[TrainState, Float[Array, " steps"]]]:
    """Build ``epoch(state, data, key) -> (state, losses)``: one jitted ``lax.scan`` of steps.

    With ``steps=None`` an epoch is one pass over a random permutation of the data
    (``N // batch_size`` steps); otherwise ``steps`` batches drawn with replacement.
    ``unroll`` goes to ``lax.scan``: ``True`` compiles the epoch as straight-line code, which
    convolutional nets need on CPU (XLA runs convolutions inside loops ~25x slower,
    jax-ml/jax#12868); use it with few ``steps`` per epoch, as compile time grows with them.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}.")
    sharding = _data_sharding(batch_size)

    def one_step(state: TrainState, batch: PyTree, key: PRNGKeyArray):
        if sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, sharding)
        loss, grads = eqx.filter_value_and_grad(loss_fn)(state.model, batch, key)
        params = eqx.filter(state.model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        model = eqx.apply_updates(state.model, updates)
        new_p, ema_p = (
            eqx.filter(model, eqx.is_inexact_array),
            eqx.filter(state.ema, eqx.is_inexact_array),
        )
        ema_p = optax.incremental_update(new_p, ema_p, 1.0 - ema_decay)
        ema = eqx.combine(ema_p, eqx.filter(state.ema, eqx.is_inexact_array, inverse=True))
        return TrainState(model, ema, opt_state, state.step + 1), loss

    @eqx.filter_jit
    def epoch(state: TrainState, data: PyTree, key: PRNGKeyArray):
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        kidx, kstep = jr.split(key)
        if steps is None:
            n_steps = n // batch_size
            if n_steps == 0:
                raise ValueError(
                    f"batch_size {batch_size} exceeds the {n} samples; lower batch_size."
                )
            idx = jr.permutation(kidx, n)[: n_steps * batch_size].reshape(n_steps, batch_size)
        else:
            n_steps = steps
            idx = jr.randint(kidx, (steps, batch_size), 0, n)
        dyn, static = eqx.partition(state, eqx.is_array)

        def body(carry, xs):
            i, k = xs
            st = eqx.combine(carry, static)
            batch = jax.tree_util.tree_map(lambda a: a[i], data)
            st, loss = one_step(st, batch, k)
            return eqx.filter(st, eqx.is_array), loss

        dyn, losses = jax.lax.scan(body, dyn, (idx, jr.split(kstep, n_steps)), unroll=unroll)
        return eqx.combine(dyn, static), losses

    return epoch


def fit(
    model: PyTree,
    loss_fn: LossFn,
    data: PyTree,
    *,
    key: PRNGKeyArray,
    optimizer: optax.GradientTransformation | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    steps_per_epoch: int | None = None,
    ema_decay: float = 0.999,
    state: TrainState | None = None,
    callback: Callable[[int, TrainState, dict[str, float]], None] | None = None,
    progress: bool = False,
    description: str = "training",
    unroll: int | bool = 1,
) -> FitResult:
    """Train ``model`` by minimising ``loss_fn`` over ``data`` for ``epochs`` epochs.

    Each epoch is a single compiled ``lax.scan``; the EMA of the parameters is kept with
    ``optax.incremental_update``. ``callback(epoch, state, metrics)`` runs after every epoch
    (for logging, evaluation or checkpoints). Pass ``state`` to continue a previous run.
    A non-finite epoch loss stops training with `FloatingPointError`. ``unroll`` is passed to
    `make_epoch` (``True`` for convolutional nets on CPU).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}.")
    optimizer = optax.adam(3e-4) if optimizer is None else optimizer
    train_state: TrainState = init_state(model, optimizer) if state is None else state
    epoch_fn = make_epoch(
        loss_fn,
        optimizer,
        batch_size=batch_size,
        steps=steps_per_epoch,
        ema_decay=ema_decay,
        unroll=unroll,
    )
    sharding = _data_sharding(batch_size)
    if sharding is not None:
        replicated = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
        put = lambda x: jax.device_put(x, replicated) if eqx.is_array(x) else x
        data, train_state = jax.tree_util.tree_map(put, (data, train_state))
    history: list[dict[str, float]] = []
    with Progress(progress) as bars:
        bar = bars.task(description, epochs)
        for e in range(epochs):
            t0 = time.perf_counter()
            train_state, losses = epoch_fn(train_state, data, jr.fold_in(key, e))
            loss = float(jnp.mean(losses))
            metrics = {
                "epoch": float(e + 1),
                "loss": loss,
                "last_loss": float(losses[-1]),
                "seconds": time.perf_counter() - t0,
            }
            if not jnp.isfinite(loss):
                raise FloatingPointError(
                    f"{description}: the loss became {loss} in epoch {e + 1}; lower the "
                    "learning rate or check the data and energies for extreme values."
                )
            history.append(metrics)
            if callback is not None:
                callback(e + 1, train_state, metrics)
            bar.advance(loss=loss)
    return FitResult(state=train_state, history=history)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, metadata: dict | None = None) -> None:
    """Write ``tree`` (and JSON ``metadata``) to ``path`` atomically: temp file, then rename.

    An interrupted save never leaves a half-written checkpoint at ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(json.dumps(metadata or {}).encode() + b"\n")
        eqx.tree_serialise_leaves(f, tree)


def load_checkpoint(path: str | os.PathLike, like: PyTree) -> tuple[PyTree, dict]:
    """Read a checkpoint written by `save_checkpoint` into the structure of ``like``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}.")
    with open(path, "rb") as f:
        metadata = json.loads(f.readline())
        tree = eqx.tree_deserialise_leaves(f, like)
    return tree, metadata
