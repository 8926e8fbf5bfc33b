"""What the stages of a run share: its PRNG streams, its data and the `Context`.

`Context` is the run as a stage sees it (config, run directory, data, keys, progress bars,
evaluation) and where finished stages leave what later ones need: the behaviour model, the
critic's Q network and the policy so far.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._experiment import Progress, RunDir
from .._sample import Sampler
from .._train import TrainState
from ._config import TrainConfig
from ._critic import reward_factor
from ._data import Transitions
from ._policy import evaluate_policy, make_policy, per_seed, policy_sampler, seed_slice
from ._qipo import draw_supports_jit

# -- PRNG streams -------------------------------------------------------------------------------


class Keys:
    """Named, fixed PRNG streams of one seed (so a resumed run draws the same numbers)."""

    NAMES: ClassVar[tuple[str, ...]] = (
        "subset", "behaviour", "critic_support", "critic", "cep", "qipo", "eval", "init",
    )  # fmt: skip

    def __init__(self, seed: int):
        self.k = dict(zip(self.NAMES, jr.split(jr.key(seed), len(self.NAMES)), strict=True))

    def __getitem__(self, name: str) -> PRNGKeyArray:
        return self.k[name]


class SeedKeys:
    """The `Keys` streams of seeds ``seed .. seed + K - 1``, stacked on a leading seed axis.

    Seed ``j`` of a ``--seeds K`` run draws exactly the numbers a single run with
    ``--seed seed+j`` draws (data subsets excepted: all seeds share the first seed's subset).
    """

    def __init__(self, seed: int, count: int):
        self.keys = [Keys(seed + j) for j in range(count)]

    def __getitem__(self, name: str) -> Array:
        return jnp.stack([k[name] for k in self.keys])

    def first(self, name: str) -> PRNGKeyArray:
        return self.keys[0][name]


def fold(keys: Array, i: int) -> Array:
    """``fold_in(key, i)`` for every seed's key."""
    return jax.vmap(lambda k: jr.fold_in(k, i))(keys)


# -- data and context ---------------------------------------------------------------------------


class Dims(NamedTuple):
    """Sizes that shape a run's checkpoints."""

    obs: int
    act: int
    subset: int  # transitions used by the critic
    supports: int  # states that carry support sets (QIPO, CEP)


def subset_rows(cfg: TrainConfig, keys: SeedKeys, n: int) -> np.ndarray:
    """The ``cfg.subset`` transitions (of ``n``) the critic and support sets use, sorted."""
    if cfg.subset and cfg.subset < n:
        return np.sort(np.asarray(jr.choice(keys.first("subset"), n, (cfg.subset,), replace=False)))
    return np.arange(n)


def dims_of(cfg: TrainConfig, obs: int, act: int, transitions: int) -> Dims:
    """The `Dims` of a run of ``cfg`` on a dataset of ``transitions`` transitions."""
    subset = cfg.subset if cfg.subset and cfg.subset < transitions else transitions
    supports = cfg.qipo_subset if cfg.qipo_subset and cfg.qipo_subset < subset else subset
    return Dims(obs, act, subset, supports)


def support_rows(cfg: TrainConfig, keys: SeedKeys, n: int) -> np.ndarray:
    """The states of the subset (of ``n``) that carry support sets: a random part of it."""
    if cfg.qipo_subset and cfg.qipo_subset < n:
        rows = jr.choice(jr.fold_in(keys.first("subset"), 1), n, (cfg.qipo_subset,), replace=False)
        return np.sort(np.asarray(rows))
    return np.arange(n)


@dataclasses.dataclass
class Data:
    """The dataset as the stages read it: observations standardised with the dataset's
    statistics, the ``subset`` rows the critic and the support sets use, and the factor
    the critic multiplies rewards by (``reward_scale``; None for ``bc``, which has no
    critic)."""

    transitions: Transitions
    mean: np.ndarray
    std: np.ndarray
    states: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    subset: np.ndarray
    reward_scale: float | None = None

    @classmethod
    def load(cls, tr: Transitions, cfg: TrainConfig, keys: SeedKeys) -> "Data":
        obs = np.asarray(tr.observations, np.float32)
        mean, std = obs.mean(0), obs.std(0) + 1e-3
        states = jnp.asarray((obs - mean) / std)
        actions = jnp.asarray(tr.actions, jnp.float32)
        scale = None if cfg.method == "bc" else reward_factor(tr, cfg.reward_scale)
        return cls(tr, mean, std, states, actions, subset_rows(cfg, keys, tr.size), scale)

    def norm(self, x: Any) -> Float[Array, "n obs"]:
        return jnp.asarray((np.asarray(x, np.float32) - self.mean) / self.std)

    def stats(self) -> dict[str, Any]:
        """``obs_stats.json``: what a policy needs to read raw observations (and the
        critic's reward factor)."""
        out = {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "act_dim": int(self.actions.shape[1]),
            "transitions": self.transitions.size,
        }
        return out if self.reward_scale is None else {**out, "reward_scale": self.reward_scale}


@dataclasses.dataclass
class Context:
    """One training run as the stages see it; finished stages leave their results here."""

    cfg: TrainConfig
    run: RunDir
    data: Data
    keys: SeedKeys
    env_id: str
    bars: Progress
    log: Callable[[str], None]
    last: str  # the stage whose epochs are evaluated periodically
    stop_after: tuple[str, int] | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    behaviour: TrainState | None = None  # set by Behaviour
    qnet: Any = None  # the critic's (stacked) Q network, set by the critic stage
    policy: tuple[Any, Any] = (None, None)  # (field, energy net or None): the policy so far

    @functools.cached_property
    def sampler(self) -> Sampler:
        return policy_sampler(self.cfg)

    @functools.cached_property
    def dims(self) -> Dims:
        d = self.data
        return dims_of(self.cfg, d.states.shape[1], d.actions.shape[1], d.transitions.size)

    def support_states(self) -> tuple[Float[Array, "n obs"], Float[Array, "n act"]]:
        """The states that carry support sets, with their dataset actions."""
        idx = self.data.subset
        rows = support_rows(self.cfg, self.keys, len(idx))
        s_sub, a_sub = self.data.states[idx], self.data.actions[idx]
        return s_sub[rows], a_sub[rows]

    def behaviour_supports(self, states: Array, stream: Array, m: int) -> Array:
        """``m`` actions per state from each seed's behaviour EMA (its own key of ``stream``)."""
        assert self.behaviour is not None
        ema = self.behaviour.ema
        draw = lambda j: draw_supports_jit(
            seed_slice(ema, j), self.sampler, states, stream[j], m=m, action_dim=self.dims.act
        )
        return per_seed(draw, self.cfg.seeds)

    def evaluate(self, field: Any, energy_net: Any, episodes: int, tag: int) -> dict[str, Any]:
        """Score a policy; the key and environment seed depend only on (seed, ``tag``), so a
        resumed run evaluates the same."""
        k = jr.fold_in(self.keys.first("eval"), tag)
        d = self.data
        pol = make_policy(self.cfg, field, energy_net, d.mean, d.std, self.dims.act)
        return evaluate_policy(
            self.cfg, self.env_id, pol, episodes, k, self.cfg.seed * 100_000 + tag
        )
