"""The policy of a run: its networks, how actions are sampled, K seeds stacked on one axis.

Every network of a run carries a leading seed axis (``--seeds K``, K = 1 included): it is
built by ``eqx.filter_vmap`` over one key per seed and trained by vmapped epochs. `Policy`
acts for all K seeds in one jitted call; `evaluate_policy` scores it in lock-step
environments.
"""

import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from .._nets import EnergyNet, MLPField, ResidualMLPField
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import EnergyGuidedField, Sampler
from ._config import TrainConfig

# -- networks and sampler of a config ----------------------------------------------------------


def make_path(cfg: TrainConfig) -> AbstractPath:
    """The probability path of ``cfg``'s method: OT (QIPO-OT, BC) or VP (QIPO-Diff, QGPO)."""
    return OTPath() if cfg.path_kind == "ot" else VPPath()


def policy_sampler(cfg: TrainConfig) -> Sampler:
    """How actions are drawn from ``cfg``'s policy network (clipped to the box [-1, 1])."""
    return Sampler(make_path(cfg), cfg.policy_solver, cfg.policy_steps, cfg.prediction, 1.0)


def make_field(cfg: TrainConfig, obs_dim: int, act_dim: int, key: PRNGKeyArray) -> Any:
    """One state-conditioned policy network (``cfg.net``)."""
    if cfg.net == "resnet":
        return ResidualMLPField(act_dim, cond_dim=obs_dim, key=key)
    return MLPField(act_dim, cond_dim=obs_dim, width=cfg.width, depth=cfg.depth, key=key)


def make_energy_net(cfg: TrainConfig, obs_dim: int, act_dim: int, key: PRNGKeyArray) -> EnergyNet:
    """QGPO's energy network (CEP)."""
    return EnergyNet(act_dim, cond_dim=obs_dim, width=cfg.width, depth=3, key=key)


# -- seeds stacked on a leading axis -----------------------------------------------------------


def stacked_fields(cfg: TrainConfig, obs_dim: int, act_dim: int, keys: Array) -> Any:
    """One policy network per seed key, stacked (``eqx.filter_vmap`` of `make_field`)."""
    return eqx.filter_vmap(lambda k: make_field(cfg, obs_dim, act_dim, k))(keys)


def stacked_energy_nets(cfg: TrainConfig, obs_dim: int, act_dim: int, keys: Array) -> Any:
    """One energy network per seed key, stacked."""
    return eqx.filter_vmap(lambda k: make_energy_net(cfg, obs_dim, act_dim, k))(keys)


def seed_slice(tree: PyTree, j: int) -> PyTree:
    """Seed ``j`` of a tree whose arrays carry a leading seed axis (other leaves kept)."""
    dyn, static = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(lambda x: x[j], dyn), static)


def seed_count(tree: PyTree) -> int:
    """Size of the leading seed axis of a stacked tree."""
    return int(jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))[0].shape[0])


def per_seed(fn: Callable[[int], PyTree], seeds: int) -> PyTree:
    """``fn(j)`` for every seed ``j``, stacked (support draws: one compiled program reused)."""
    outs = [fn(j) for j in range(seeds)]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)


# -- the policy --------------------------------------------------------------------------------


class Policy(eqx.Module):
    """``policy(obs [K * n, obs_dim], key) -> actions`` for `ewfm.rl.evaluate`, K seeds at once.

    ``field`` (and ``energy_net``, when not ``None``) carry a leading seed axis; rows
    ``j*n .. (j+1)*n - 1`` of the observations are acted on by seed ``j`` (all seeds in one
    jitted call per environment step). With an energy network the field is guided by its
    gradient (QGPO); without, it is sampled as is. A pytree: the evaluator jits it once and
    new weights do not recompile. Observations are normalised with the dataset statistics.

    How an action is extracted (evaluation extras, reported apart from the policy itself):
    ``deterministic`` integrates from ``x1 = 0`` instead of a noise draw; ``best_of = N``
    (with ``q_net``, stacked like the field) draws N actions per state and acts with the one
    of highest ``q_net.min`` (IDQL's extraction).
    """

    field: Any
    energy_net: Any
    sampler: Sampler
    mean: Float[Array, " obs"] = eqx.field(converter=jnp.asarray)
    std: Float[Array, " obs"] = eqx.field(converter=jnp.asarray)
    act_dim: int = eqx.field(static=True)
    guidance: float = eqx.field(static=True)
    q_net: Any = None
    best_of: int = eqx.field(static=True, default=1)
    deterministic: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}.")
        if self.best_of > 1 and self.q_net is None:
            raise ValueError("best_of > 1 ranks samples by Q: pass the run's q_net.")
        if self.best_of > 1 and self.deterministic:
            raise ValueError("best_of > 1 needs random draws; drop deterministic.")

    def __call__(self, obs: Float[ArrayLike, "n obs"], key: PRNGKeyArray) -> Float[Array, "n act"]:
        s = (jnp.asarray(obs, jnp.float32) - self.mean) / self.std
        k = seed_count(self.field)
        s = s.reshape(k, -1, s.shape[-1])
        a = eqx.filter_vmap(self._one)(self.field, self.energy_net, self.q_net, s, jr.split(key, k))
        return a.reshape(-1, self.act_dim)

    def _one(self, field: Any, energy_net: Any, q_net: Any, states: Array, key: Array) -> Array:
        """One seed's actions for its ``states``."""
        if energy_net is not None:
            field = EnergyGuidedField(field, energy_net, self.sampler.path, self.guidance, "eps")
        n = states.shape[0]
        if self.deterministic:
            return self.sampler.integrate(field, jnp.zeros((n, self.act_dim)), states)
        if self.best_of == 1:
            return self.sampler(field, key, (n, self.act_dim), states)
        reps = jnp.repeat(states, self.best_of, axis=0)  # state i's draws: rows i*N .. i*N+N-1
        draws = self.sampler(field, key, (n * self.best_of, self.act_dim), reps)
        q = jax.vmap(q_net.min)(reps, draws).reshape(n, self.best_of)
        best = jnp.argmax(q, axis=1)
        return draws.reshape(n, self.best_of, self.act_dim)[jnp.arange(n), best]


def make_policy(
    cfg: TrainConfig,
    field: Any,
    energy_net: Any,
    mean: Float[ArrayLike, " obs"],
    std: Float[ArrayLike, " obs"],
    act_dim: int,
) -> Policy:
    """The evaluation policy of stacked (per-seed) networks; ``energy_net=None``: unguided."""
    return Policy(
        field,
        energy_net,
        policy_sampler(cfg),
        jnp.asarray(mean),
        jnp.asarray(std),
        act_dim,
        cfg.guidance,
    )


def evaluate_policy(
    cfg: TrainConfig, env_id: str, policy: Policy, episodes: int, key: PRNGKeyArray, seed: int
) -> dict[str, Any]:
    """``episodes`` episodes for each of the policy's K seeds, all in one lock-step batch.

    Scores are pooled over episodes and seeds (``score_mean``/``score_std``); ``seed_scores``
    holds each seed's mean. Episode ``i`` is reset with environment seed ``seed + i``.
    """
    from ._evaluate import evaluate

    t0 = time.perf_counter()
    k = seed_count(policy.field)
    res = evaluate(
        policy, env_id, episodes * k, seed, key=key, max_episode_steps=cfg.eval_max_steps
    )
    scores = np.asarray(res.normalized, np.float64)
    return {
        "score_mean": float(res.normalized_mean),
        "score_std": float(res.normalized_std),
        "return_mean": float(res.mean),
        "episodes": int(res.episodes),
        "scores": [float(x) for x in scores],
        "seed_scores": [float(x) for x in scores.reshape(k, episodes).mean(axis=1)],
        "eval_seconds": time.perf_counter() - t0,
    }
