"""Vectorised evaluation: all episodes at once, one batched (jitted) policy call per step."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray

from ._data import LockstepEnvs, reference_scores


@dataclass(frozen=True)
class EvalResult:
    """Per-episode returns (raw and D4RL-normalised) and their mean ± std.

    ``normalized`` is NaN where the environment has no reference returns.
    """

    env_id: str
    seed: int
    returns: np.ndarray
    normalized: np.ndarray
    lengths: np.ndarray

    @property
    def episodes(self) -> int:
        return int(self.returns.shape[0])

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    @property
    def normalized_mean(self) -> float:
        return float(self.normalized.mean())

    @property
    def normalized_std(self) -> float:
        return float(self.normalized.std())

    def as_dict(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "seed": self.seed,
            "episodes": self.episodes,
            "mean": self.mean,
            "std": self.std,
            "normalized_mean": self.normalized_mean,
            "normalized_std": self.normalized_std,
            "returns": self.returns.tolist(),
            "normalized": self.normalized.tolist(),
            "lengths": self.lengths.tolist(),
        }

    def __str__(self) -> str:
        return (
            f"{self.env_id}: return {self.mean:.1f} ± {self.std:.1f}, normalised "
            f"{self.normalized_mean:.1f} ± {self.normalized_std:.1f} ({self.episodes} episodes)"
        )


def _apply(policy: Any, obs: jax.Array, key: jax.Array, step: jax.Array | None) -> jax.Array:
    return policy(obs, key) if step is None else policy(obs, key, step=step)


@functools.lru_cache(maxsize=16)
def _compiled(static: Any) -> Callable[..., jax.Array]:
    """One jitted program per policy *structure*: new weights reuse it."""
    return jax.jit(lambda params, *args: _apply(eqx.combine(params, static), *args))


_filter_jitted = eqx.filter_jit(_apply)


def policy_caller(policy: Any) -> Callable[[jax.Array, jax.Array, jax.Array | None], jax.Array]:
    """``call(obs, key, step)``: `evaluate`'s per-step call, the policy partitioned ONCE here.

    ``eqx.filter_jit`` re-partitions and re-hashes the whole policy on every call, which
    for one state costs a large share of the policy itself; ``jax.jit`` on the arrays takes
    the C++ dispatch path. Policies with an unhashable static part use ``filter_jit``.
    """
    params, static = eqx.partition(policy, eqx.is_array)
    try:
        run = _compiled(static)
    except TypeError:
        return lambda obs, key, step: _filter_jitted(policy, obs, key, step)
    return lambda obs, key, step: run(params, obs, key, step)


def evaluate(
    policy: Callable[..., Any],
    env_id: str,
    episodes: int,
    seed: int,
    *,
    key: PRNGKeyArray | None = None,
    max_episode_steps: int = 1000,
    workers: int = 0,
) -> EvalResult:
    """Run ``episodes`` episodes of ``env_id`` at once; episode ``i`` is reset with ``seed + i``.

    ``policy(observations [episodes, obs_dim], key) -> actions [episodes, act_dim]`` is called
    once per environment step for the whole batch (finished episodes keep their last
    observation as padding, so the shape never changes and a jitted policy compiles once);
    it gets a fresh key each step (from ``key``, default ``PRNGKey(seed)``). A policy with
    ``uses_step = True`` (the pack policies with a time feature) also gets ``step=[n]``, the
    step index within each episode.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    rng: PRNGKeyArray = jr.PRNGKey(seed) if key is None else key
    uses_step = bool(getattr(policy, "uses_step", False))
    try:
        lo, hi = reference_scores(env_id)
    except ValueError:
        lo, hi = float("nan"), float("nan")
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, np.int64)
    envs = LockstepEnvs(env_id, episodes, workers=workers, max_episode_steps=max_episode_steps)
    call = policy_caller(policy)
    with envs:
        act_shape = envs.action_shape
        obs = envs.reset(np.arange(episodes), seed + np.arange(episodes)).astype(np.float32)
        running = np.ones(episodes, bool)
        while running.any():
            rng, sub = jr.split(rng)
            step = jnp.asarray(lengths, jnp.float32) if uses_step else None
            act = np.asarray(call(jnp.asarray(obs), sub, step))
            if act.shape != (episodes, *act_shape):
                raise ValueError(
                    f"the policy returned actions of shape {list(act.shape)} but {env_id} needs "
                    f"{[episodes, *act_shape]} (one action per environment)"
                )
            idx = np.flatnonzero(running)
            act = np.clip(act[idx], envs.action_low, envs.action_high)
            nobs, rew, term, trunc = envs.step(idx, act)
            obs[idx] = nobs
            returns[idx] += rew
            lengths[idx] += 1
            running[idx[term | trunc]] = False
    normalized = 100.0 * (returns - lo) / (hi - lo)
    return EvalResult(env_id, seed, returns, normalized, lengths)
