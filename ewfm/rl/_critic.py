"""The critics of QIPO/QGPO: twin Q networks, their losses, and the data they train on.

**In-support** (QGPO; Algorithm 2, step 2, in docs/method.md §9): for each next state ``s'``
the data carry M support actions pre-sampled from the behaviour model; the target is

    y = r + gamma (1 - terminal) sum_j softmax_j(beta_Q Q'(s', a'_j)) Q'(s', a'_j)

with ``Q' = min`` of the two target networks (`critic_loss`).

**IQL** (Kostrikov et al. 2021, in-sample): a state value ``V`` fitted by expectile
regression to ``min_k Q'_k(s, a)`` of the dataset pairs, and Q to ``r + gamma V(s')``
(`iql_loss`); no action outside the data is ever evaluated.

Bootstrapping only stops at true terminals (time-limit truncations keep it). The target
networks are a soft (Polyak) copy of the online ones; the copy is updated by the optimiser
(`soft_target_optimizer`) so that every critic trains through `ewfm.make_epoch`. Rewards
may be rescaled once, before any of this (`reward_scale`).
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._experiment import ConfigError
from .._nets import StateValue, TwinQ
from ._data import Transitions, episode_returns

REWARD_SCALE_RANGE = 1000.0
"""``reward_scale = "returns"`` maps the dataset's episode returns onto a range this wide."""


class Critic(eqx.Module):
    """Online twin Q networks, their soft-updated target copy (never trained by gradients)
    and, for the critics that fit one, a state-value network ``v`` (IQL; the warm start)."""

    q: TwinQ
    target: TwinQ
    v: StateValue | None = None


def make_critic(
    state_dim: int,
    action_dim: int,
    *,
    width: int,
    depth: int,
    key: PRNGKeyArray,
    value: bool = False,
    layer_norm: bool = False,
) -> Critic:
    """Twin Q networks ``width x depth`` (and a V network of that shape with ``value``)."""
    # Q keeps the whole key, so that a critic without V is the one older versions made
    q = TwinQ(state_dim, action_dim, width=width, depth=depth, layer_norm=layer_norm, key=key)
    if not value:
        return Critic(q=q, target=q)
    kv = jr.fold_in(key, 2)
    return Critic(
        q, q, StateValue(state_dim, width=width, depth=depth, layer_norm=layer_norm, key=kv)
    )


def reward_factor(transitions: Transitions, how: str) -> float:
    """The factor the critics multiply every reward by (``reward_scale``).

    ``"none"``: 1. ``"returns"``: ``1000 / (max - min)`` over the undiscounted returns of
    the dataset's complete episodes (each ends at a terminal or a timeout), the D4RL
    locomotion convention of IQL and QGPO, so that Q has about the same scale on every
    dataset and ``beta_q`` (in units of 1/Q) means about the same sharpness.
    """
    if how == "none":
        return 1.0
    if how != "returns":
        raise ConfigError(f"unknown reward_scale {how!r}; choose one of none, returns.")
    rets = episode_returns(transitions)
    spread = float(rets.max() - rets.min()) if rets.size else 0.0
    if not spread > 0:
        raise ConfigError(
            f"reward_scale returns needs episodes of different returns; the dataset has "
            f"{rets.size} complete episode(s) spanning {spread}: use reward_scale none."
        )
    return REWARD_SCALE_RANGE / spread


class CriticBatch(NamedTuple):
    """Transitions with M behaviour support actions per next state."""

    observations: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    rewards: Float[Array, " n"]
    next_observations: Float[Array, "n obs"]
    terminals: Float[Array, " n"]
    next_supports: Float[Array, "n m act"]


class ReturnBatch(NamedTuple):
    """Dataset pairs with their Monte-Carlo discounted returns (the Q(s, a) warm start)."""

    observations: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    returns: Float[Array, " n"]


class TransitionBatch(NamedTuple):
    """Dataset transitions ``(s, a, r, s', terminal)``: what IQL trains on."""

    observations: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    rewards: Float[Array, " n"]
    next_observations: Float[Array, "n obs"]
    terminals: Float[Array, " n"]


class WarmBatch(NamedTuple):
    """Dataset transitions with the Monte-Carlo discounted return of each (the V warm start)."""

    observations: Float[Array, "n obs"]
    actions: Float[Array, "n act"]
    rewards: Float[Array, " n"]
    next_observations: Float[Array, "n obs"]
    terminals: Float[Array, " n"]
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
    """Squared error of both online Q networks to the Monte-Carlo returns (the old warm
    start, ``critic_warm_start = "q"``, kept so that older runs train as they did).

    It gives Q the behaviour's scale quickly, but a return's long, noisy tail is explained
    best by the state, and a network fed (s, a) learns to read the state off the action
    (large actions come from fast states): prefer `value_warm_loss`.
    """
    del key
    q = jax.vmap(critic.q)(batch.observations, batch.actions)
    return jnp.mean(jnp.sum((q - batch.returns[:, None]) ** 2, axis=1))


def _frozen(net: Any) -> Any:
    """``net`` with its arrays behind ``stop_gradient`` (a target, not trained by the loss)."""
    params, static = eqx.partition(net, eqx.is_array)
    return eqx.combine(jax.lax.stop_gradient(params), static)


def _td_error(critic: Critic, batch: Any, next_v: Float[Array, " b"], gamma: float) -> Array:
    """``sum_k (Q_k(s, a) - (r + gamma (1 - terminal) next_v))^2`` per pair."""
    y = batch.rewards + gamma * (1.0 - batch.terminals) * next_v
    q = jax.vmap(critic.q)(batch.observations, batch.actions)  # [B, 2]
    return jnp.sum((q - y[:, None]) ** 2, axis=1)


def value_warm_loss(
    critic: Critic, batch: WarmBatch, key: PRNGKeyArray, *, gamma: float
) -> Float[Array, ""]:
    """The warm start: V(s) regressed on the Monte-Carlo returns, and both Q networks on
    the one-step backup ``r + gamma (1 - terminal) V(s')`` of that V (V held fixed there).

    Only the state-only V sees the returns, so their long noisy tail cannot teach Q to
    read the state off the action. Q gets its scale from Bellman's equation for the
    behaviour policy, ``Q(s, a) = E[r + gamma V(s')]``: its dependence on the action
    comes only from this transition's reward and next state. The target networks follow
    Q by the soft update meanwhile, so temporal-difference learning starts from it.
    """
    del key
    assert critic.v is not None, "value_warm_loss needs a critic with a V network"
    v = jax.vmap(critic.v)(batch.observations)
    next_v = jax.lax.stop_gradient(jax.vmap(critic.v)(batch.next_observations))
    return jnp.mean((v - batch.returns) ** 2) + jnp.mean(_td_error(critic, batch, next_v, gamma))


def expectile_loss(diff: Float[ArrayLike, "*b"], expectile: float) -> Float[Array, "*b"]:
    """``|expectile - 1(diff < 0)| diff^2`` elementwise: minimised over a constant ``v``,
    ``mean(expectile_loss(x - v))`` gives the ``expectile``-expectile of ``x`` (0.5: the
    mean; toward 1: the maximum)."""
    diff = jnp.asarray(diff)
    return jnp.where(diff > 0, expectile, 1.0 - expectile) * diff**2


def iql_loss(
    critic: Critic,
    batch: TransitionBatch,
    key: PRNGKeyArray,
    *,
    gamma: float,
    expectile: float,
) -> Float[Array, ""]:
    """IQL's V and Q losses, summed into one step (they train disjoint parameters):

    - V: ``expectile_loss(min_k Q'_k(s, a) - V(s))`` on dataset pairs, with the target Q';
    - Q: ``sum_k (Q_k(s, a) - (r + gamma (1 - terminal) V(s')))^2`` with V held fixed.

    Adam keeps per-parameter statistics, so the sum trains like two optimisers; the one
    difference from the reference, which updates V first, is that Q's target uses V from
    before this step (one step of lag, like the target network's).
    """
    del key
    assert critic.v is not None, "iql_loss needs a critic with a V network"
    target = _frozen(critic.target)
    q_t = jax.vmap(target.min)(batch.observations, batch.actions)
    v = jax.vmap(critic.v)(batch.observations)
    next_v = jax.lax.stop_gradient(jax.vmap(critic.v)(batch.next_observations))
    value = jnp.mean(expectile_loss(q_t - v, expectile))
    return value + jnp.mean(_td_error(critic, batch, next_v, gamma))


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
    next_q = q_values(_frozen(critic.target), batch.next_observations, batch.next_supports)
    y = support_target(next_q, batch.rewards, batch.terminals, gamma, beta_q)
    q = jax.vmap(critic.q)(batch.observations, batch.actions)  # [B, 2]
    return jnp.mean(jnp.sum((q - y[:, None]) ** 2, axis=1))


def _online(c: Any) -> Any:
    """What the optimiser trains: Q, and V when the critic has one (a critic without V
    keeps the optimiser state older versions wrote)."""
    return c.q if c.v is None else (c.q, c.v)


def soft_target_optimizer(inner: optax.GradientTransformation, tau: float) -> Any:
    """Optimise ``Critic.q`` (and ``Critic.v``) with ``inner`` and move ``Critic.target`` by
    ``tau (q - target)``.

    The target moves toward the online weights *before* this step's update (one step of lag,
    as in most implementations). Its gradients (zero: the loss stops them) are ignored.
    """

    def init(params: Any) -> Any:
        return inner.init(_online(params))

    def update(updates: Any, state: Any, params: Any = None) -> Any:
        u: Any
        u, state = inner.update(_online(updates), state, _online(params))
        uq, uv = (u, None) if params.v is None else u
        ut = jax.tree_util.tree_map(lambda a, b: tau * (a - b), params.q, params.target)
        return Critic(q=uq, target=ut, v=uv), state  # pyright: ignore[reportArgumentType]

    return optax.GradientTransformation(init, update)
