"""The critic of QIPO/QGPO: twin Q networks trained by in-support softmax Q-learning.

For each next state ``s'`` the dataset carries M support actions pre-sampled from the
behaviour model; the target is (Algorithm 2, step 2, in docs/method.md §9)

    y = r + gamma (1 - terminal) sum_j softmax_j(beta_Q Q'(s', a'_j)) Q'(s', a'_j)

with ``Q' = min`` of the two target networks. Bootstrapping only stops at true terminals
(time-limit truncations keep it). The target networks are a soft (Polyak) copy of the
online ones; the copy is updated by the optimiser (`soft_target_optimizer`) so that the
critic trains through `ewfm.make_epoch` like every other model.
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._nets import TwinQ


class Critic(eqx.Module):
    """Online twin Q networks and their soft-updated target copy (never trained by gradients)."""

    q: TwinQ
    target: TwinQ


def make_critic(state_dim: int, action_dim: int, *, width: int, depth: int, key) -> Critic:
    q = TwinQ(state_dim, action_dim, width=width, depth=depth, key=key)
    return Critic(q=q, target=q)


class CriticBatch(NamedTuple):
    """Transitions with M behaviour support actions per next state."""

    observations: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    rewards: Float[Array, " n"]
    next_observations: Float[Array, "n obs"]
    terminals: Float[Array, " n"]
    next_supports: Float[Array, "n m act"]


class ReturnBatch(NamedTuple):
    """Dataset pairs with their Monte-Carlo discounted returns (the critic's warm start)."""

    observations: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    returns: Float[Array, " n"]


def discounted_returns(
    rewards: Float[np.ndarray, " n"],
    terminals: Float[np.ndarray, " n"],
    timeouts: Float[np.ndarray, " n"],
    gamma: float,
) -> Float[np.ndarray, " n"]:
    """Monte-Carlo returns ``G_i = sum_k gamma^k r_{i+k}`` to the end of each episode.

    Episodes end at a terminal or a timeout (or the end of the data). A truncated episode
    (timeout, or data cut) did not end, so its missing tail is bootstrapped as if the
    episode went on at its mean reward: ``gamma^(L-i) * mean(r) / (1 - gamma)``. Computed
    in float64 per episode (``gamma^-i`` stays finite for the 1,000-step MuJoCo episodes).
    """
    r = np.asarray(rewards, np.float64)
    ends = np.flatnonzero((np.asarray(terminals) + np.asarray(timeouts)) > 0)
    if ends.size == 0 or ends[-1] != r.size - 1:
        ends = np.append(ends, r.size - 1)
    out = np.empty_like(r)
    start = 0
    for e in ends:
        seg = r[start : e + 1]
        p = gamma ** np.arange(seg.size)
        g = np.cumsum((seg * p)[::-1])[::-1] / p
        if not terminals[e]:
            g = g + gamma ** (seg.size - np.arange(seg.size)) * seg.mean() / (1.0 - gamma)
        out[start : e + 1] = g
        start = e + 1
    return out


def return_loss(critic: Critic, batch: ReturnBatch, key: PRNGKeyArray) -> Float[Array, ""]:
    """Squared error of both online Q networks to the Monte-Carlo returns (warm start).

    Regressing on returns gives the critic the scale of the behaviour policy's values in a
    few thousand steps; temporal-difference learning from there only has to refine it
    (from scratch, soft target updates with ``tau = 0.005`` need ~1/(tau (1 - gamma))
    steps to propagate the horizon).
    """
    del key
    q = jax.vmap(critic.q)(batch.observations, batch.actions)
    return jnp.mean(jnp.sum((q - batch.returns[:, None]) ** 2, axis=1))


def support_target(
    next_q: Float[Array, "batch m"],
    rewards: Float[Array, " batch"],
    terminals: Float[Array, " batch"],
    gamma: Float[ArrayLike, ""],
    beta_q: Float[ArrayLike, ""],
) -> Float[Array, " batch"]:
    """``r + gamma (1 - terminal) sum_j softmax_j(beta_Q Q'_j) Q'_j`` (the in-support value)."""
    w = jax.nn.softmax(beta_q * next_q, axis=1)
    v = jnp.sum(w * next_q, axis=1)
    return rewards + gamma * (1.0 - terminals) * v


def q_values(
    q: TwinQ, states: Float[Array, "n obs"], actions: Float[Array, "n m act"]
) -> Float[Array, "n m"]:
    """``min_k Q_k(s_i, a_ij)`` for M actions per state."""
    return jax.vmap(lambda s, a: jax.vmap(lambda aj: q.min(s, aj))(a))(states, actions)


def critic_loss(
    critic: Critic,
    batch: CriticBatch,
    key: PRNGKeyArray,
    *,
    gamma: float,
    beta_q: float,
) -> Float[Array, ""]:
    """Squared error of both online Q networks to the in-support softmax target."""
    del key
    params, static = eqx.partition(critic.target, eqx.is_array)
    target_net = eqx.combine(jax.lax.stop_gradient(params), static)
    next_q = q_values(target_net, batch.next_observations, batch.next_supports)
    y = support_target(next_q, batch.rewards, batch.terminals, gamma, beta_q)
    q = jax.vmap(critic.q)(batch.observations, batch.actions)  # [B, 2]
    return jnp.mean(jnp.sum((q - y[:, None]) ** 2, axis=1))


def soft_target_optimizer(inner: optax.GradientTransformation, tau: float) -> Any:
    """Optimise ``Critic.q`` with ``inner`` and move ``Critic.target`` by ``tau (q - target)``.

    The target moves toward the online weights *before* this step's update (one step of lag,
    as in most implementations). Its gradients (zero: the loss stops them) are ignored.
    """

    def init(params: Any) -> Any:
        return inner.init(params.q)

    def update(updates: Any, state: Any, params: Any = None) -> Any:
        uq, state = inner.update(updates.q, state, params.q)
        ut = jax.tree_util.tree_map(lambda a, b: tau * (a - b), params.q, params.target)
        return Critic(q=uq, target=ut), state  # pyright: ignore[reportArgumentType]

    return optax.GradientTransformation(init, update)
