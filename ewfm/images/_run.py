"""Train an image run into a run directory, load it back, and draw images from it.

A run directory (`ewfm`'s ``RunDir``) holds ``config.json``, ``model.eqx`` (the EMA
networks, via `ewfm.save_checkpoint`) and ``metrics.json`` (what training recorded); every
file is written atomically.
"""

import dataclasses
import json
import math
import os
import resource
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from .._experiment import ConfigError, RunDir
from .._sample import Sampler
from .._train import fit, load_checkpoint, save_checkpoint
from ._config import ImageConfig
from ._data import TrainingSet, to_images, to_model_space, training_set
from ._methods import condition, guided, init_net, loss_function, net_structure, sampler
from ._target import n_classes


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained image run: its config, its EMA networks and what training recorded."""

    cfg: ImageConfig
    net: Any
    info: dict[str, Any]

    @property
    def sampler(self) -> Sampler:
        """How this run is sampled (path, solver, steps, what the field predicts)."""
        return sampler(self.cfg)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _check_out(out: str | os.PathLike, cfg: ImageConfig) -> RunDir:
    """Refuse, before any work, an ``out`` that is neither new, nor empty, nor a run of
    ``cfg`` itself (which training then writes anew)."""
    rd = RunDir(out)
    if not rd.is_run():
        rd.check(cfg.to_json())
        return rd
    try:
        old = ImageConfig.from_json(rd.config_path)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(
            f"{rd.root} holds a run that is not an image run; choose another out directory."
        ) from None
    for k, v in cfg.to_json().items():
        if old.to_json()[k] != v:
            raise ConfigError(
                f"{rd.root} holds another image run ({k}={old.to_json()[k]!r}, not {v!r}); "
                "choose another out directory."
            )
    return rd


def _optimizer(cfg: ImageConfig, total: int) -> optax.GradientTransformation:
    """Adam under a 1.0 global-norm clip: warm-up, then cosine decay to 10%."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(50, total // 10 + 1), total, cfg.learning_rate * 0.1
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def _arrays(cfg: ImageConfig, ts: TrainingSet) -> dict[str, Array]:
    """The training arrays `ewfm.fit` batches: images, energies and one-hot hue classes."""
    onehot = np.eye(n_classes(cfg.n_bins), dtype=np.float32)[ts.classes]
    return {
        "x": to_model_space(ts.images),
        "energy": jnp.asarray(ts.energy, jnp.float32),
        "onehot": jnp.asarray(onehot),
    }


def train(
    cfg: ImageConfig,
    out: str | os.PathLike | None = None,
    *,
    data: TrainingSet | None = None,
    progress: bool = False,
) -> Run:
    """Train the run ``cfg`` for ``cfg.steps`` steps; with ``out``, write its run directory.

    ``out`` must be new, empty, or a run of this same ``cfg`` (checked before any work).
    ``data`` is the training set when the caller has it already (`training_set`).
    """
    rd = None if out is None else _check_out(out, cfg)
    ts = training_set(cfg) if data is None else data
    kinit, ktrain = jr.split(jr.PRNGKey(cfg.seed))
    net = init_net(cfg, kinit, ts.energy)
    epochs = math.ceil(cfg.steps / cfg.steps_per_call)
    total = epochs * cfg.steps_per_call
    arrays = _arrays(cfg, ts)
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = fit(
        net,
        loss_function(cfg, ts.energy, arrays["x"]),
        arrays,
        key=ktrain,
        optimizer=_optimizer(cfg, total),
        epochs=epochs,
        batch_size=cfg.batch_size,
        steps_per_epoch=cfg.steps_per_call,
        ema_decay=min(0.999, 1.0 - 10.0 / total),
        progress=progress,
        description=f"{cfg.method} on {cfg.data} {cfg.size}x{cfg.size}",
        unroll=True,
    )
    losses = [h["loss"] for h in result.history]
    info = {
        "steps": total,
        "train_wall_s": time.perf_counter() - wall0,
        "train_cpu_s": _cpu_seconds() - cpu0,
        "n_train": len(ts),
        "n_params": int(
            sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_array)))
        ),
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last_10pct": float(np.mean(losses[-max(1, len(losses) // 10) :]))
        if losses
        else float("nan"),
        "data_mean_energy": float(np.mean(ts.energy)),
    }
    run = Run(cfg, result.state.ema, info)
    if rd is not None:
        rd.write_json("config.json", cfg.to_json())
        save_checkpoint(rd / "model.eqx", run.net, {"config": cfg.to_json()})
        rd.write_json("metrics.json", {"train": info})
    return run


def load_run(out: str | os.PathLike) -> Run:
    """Read a run directory written by `train` (older runs' configs included)."""
    rd = RunDir(out)
    rd.require("config.json", "model.eqx", hint="create one with `ewfm images train --out DIR`.")
    cfg = ImageConfig.from_json(rd.config_path)
    net, _ = load_checkpoint(rd / "model.eqx", net_structure(cfg))
    metrics = rd.read_json("metrics.json") if (rd / "metrics.json").is_file() else {}
    return Run(cfg, net, metrics.get("train", {}))


def guided_field(run: Run, beta: float | None = None, scale: float | None = None) -> Any:
    """The field to sample: the net at ``beta`` (efm/ed), CFG at ``scale`` (cfg), or the
    unguided noise prediction plus the energy net's gradient at ``beta`` (cep).

    What does not apply to the run's method (``beta`` for cfg, ``scale`` for the others) is
    refused with a one-line `ConfigError`, as is a beta the run was not trained for.
    """
    return guided(run.cfg, run.net, beta, scale)


@eqx.filter_jit
def _draw(sampler: Sampler, field: Any, key: PRNGKeyArray, cond: Any, shape: tuple[int, int]):
    return sampler(field, key, shape, cond)


def generate(
    run: Run,
    key: PRNGKeyArray,
    n: int,
    *,
    beta: float | None = None,
    scale: float | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """``n`` images ``[n, H, W, 3]`` in [0, 1] from a run, ``chunk`` at a time (one compile).

    efm/ed/cep: at ``beta`` (any value in ``[0, beta_max]`` for a beta-input run); cfg: at
    guidance scale ``scale`` (default 1) towards the target hue's class. OT runs use the
    midpoint rule, VP runs DPM-Solver-2M, each with ``cfg.sample_steps`` steps (`Run.sampler`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    cfg = run.cfg
    field = guided_field(run, beta, scale)
    shape = (chunk, cfg.size * cfg.size * 3)
    cond = condition(cfg, chunk)
    out = [
        to_images(_draw(run.sampler, field, jr.fold_in(key, i), cond, shape), cfg.size)
        for i in range(math.ceil(n / chunk))
    ]
    return np.concatenate(out)[:n]


def time_generation(run: Run, n: int = 64, **kwargs: Any) -> float:
    """Wall seconds to draw ``n`` images, after a compile-and-warm-up call."""
    generate(run, jr.PRNGKey(1), n, chunk=n, **kwargs)
    t0 = time.perf_counter()
    generate(run, jr.PRNGKey(2), n, chunk=n, **kwargs)
    return time.perf_counter() - t0
