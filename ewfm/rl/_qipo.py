"""QIPO building blocks: batched support draws and renewal, Q scaling, Q-weighted losses.

A *policy* here is a state-conditioned field (velocity on the OT path, noise on the VP path)
plus an `ewfm.Sampler`. Support renewal (Algorithm 2, line 10) draws M actions for every
state from the CURRENT policy in one jitted, chunked program, then scores them once with the
fixed critic; a QIPO epoch then minimises `ewfm.qfm_loss` / `ewfm.qd_loss` on batches of
states with their M supports and Q-values.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._losses import qd_loss, qfm_loss
from .._nets import TwinQ
from .._paths import AbstractPath
from .._sample import Sampler
from .._train import TrainState
from ._config import Q_NORMS
from ._critic import q_values


def draw_supports(
    field: Any,
    sampler: Sampler,
    states: Float[Array, "n obs"],
    key: PRNGKeyArray,
    *,
    m: int,
    action_dim: int,
    data_actions: Float[Array, "n act"] | None = None,
    chunk: int = 2048,
) -> Float[Array, "n m act"]:
    """M actions for every state drawn from ``field`` (chunked ``lax.map``; one compile).

    With ``data_actions`` the first support of each state is its dataset action and the
    other ``M - 1`` are samples (anchoring the support set to the behaviour data).
    """
    n = states.shape[0]
    m_draw = m - 1 if data_actions is not None else m
    per = max(1, chunk // max(m_draw, 1))
    n_chunks = -(-n // per)
    pad = n_chunks * per - n
    s_pad = jnp.concatenate([states, jnp.repeat(states[-1:], pad, axis=0)])
    s_chunks = s_pad.reshape(n_chunks, per, states.shape[1])
    keys = jr.split(key, n_chunks)

    def one(args):
        s, k = args
        rep = jnp.repeat(s, m_draw, axis=0)
        a = sampler(field, k, (rep.shape[0], action_dim), rep)
        return a.reshape(per, m_draw, action_dim)

    out = jax.lax.map(one, (s_chunks, keys)).reshape(n_chunks * per, m_draw, action_dim)[:n]
    if data_actions is not None:
        out = jnp.concatenate([data_actions[:, None, :], out], axis=1)
    return out


draw_supports_jit = eqx.filter_jit(draw_supports)
_q_values_jit = eqx.filter_jit(q_values)


def score_supports(
    qnet: TwinQ,
    states: Float[Array, "n obs"],
    actions: Float[Array, "n m act"],
    *,
    score_q: Callable[..., Any] = _q_values_jit,
    chunk: int = 8192,
) -> Float[Array, "n m"]:
    """``min_k Q_k(s_i, a_ij)`` of the fixed critic ``qnet``, ``chunk`` states at a time."""
    out = [
        score_q(qnet, states[i : i + chunk], actions[i : i + chunk])
        for i in range(0, states.shape[0], chunk)
    ]
    return jnp.concatenate(out)


def scale_q(q: Float[Array, "*seeds n m"], norm: str) -> Float[Array, "*seeds n m"]:
    """Q rescaled for the weights ``M softmax_j(beta Q_j)`` (see `Q_NORMS`).

    Softmax ignores a per-state shift, so only the scale matters. ``"spread"`` pools over
    the ``n`` states of each leading (seed) index separately; a state whose supports tie has
    spread 0 and keeps uniform weights under ``"state"``.
    """
    if norm == "none":
        return q
    spread = jnp.std(q, axis=-1, keepdims=True)
    if norm == "spread":
        spread = jnp.mean(spread, axis=-2, keepdims=True)
    elif norm != "state":
        raise ValueError(f"unknown q_norm {norm!r}; choose one of {', '.join(Q_NORMS)}.")
    centred = q - jnp.mean(q, axis=-1, keepdims=True)
    return centred / jnp.maximum(spread, jnp.finfo(q.dtype).tiny)


def head_values(
    qnet: Any, states: Float[Array, "n obs"], actions: Float[Array, "n m act"]
) -> Float[Array, "n m heads"]:
    """Every head of the critic (``qnet(s, a)`` returns one value per head, like
    `ewfm.TwinQ`) on M actions per state."""
    return jax.vmap(lambda s, a: jax.vmap(lambda aj: qnet(s, aj))(a))(states, actions)


_head_values_jit = eqx.filter_jit(head_values)


def ranking_reliability(heads: Float[Array, "*seeds n m k"]) -> Float[Array, "*seeds"]:
    """How reliable the critic's ranking of a state's actions is, from its heads' agreement.

    If each head is the true Q plus independent error, the correlation of two heads' values
    centred within each state (pooled over states) is the reliability r of one head's
    within-state ranking; Spearman-Brown gives the reliability ``R = 2r / (1 + r)`` of the
    two-head estimate, clipped to [0, 1]. ``R`` is also the factor by which the best linear
    estimate of the true centred Q shrinks the observed one, so ``beta R`` is the weights'
    inverse temperature once noise is accounted for. Heads that share a bias (both learnt
    the same wrong preference) agree: this measures noise, not bias.
    """
    c = heads - jnp.mean(heads, axis=-2, keepdims=True)
    a, b = c[..., 0], c[..., 1]
    axes = (-2, -1)
    r = jnp.sum(a * b, axis=axes) / jnp.sqrt(
        jnp.maximum(jnp.sum(a * a, axis=axes) * jnp.sum(b * b, axis=axes), jnp.finfo(c.dtype).tiny)
    )
    return jnp.clip(2.0 * r / (1.0 + jnp.maximum(r, 0.0)), 0.0, 1.0)


def support_reliability(
    qnet: Any, states: Float[Array, "n obs"], actions: Float[Array, "n m act"], chunk: int = 8192
) -> Float[Array, ""]:
    """`ranking_reliability` of the critic ``qnet`` on a support set (``chunk`` states at a
    time)."""
    heads = jnp.concatenate([
        _head_values_jit(qnet, states[i : i + chunk], actions[i : i + chunk])
        for i in range(0, states.shape[0], chunk)
    ])  # fmt: skip
    if heads.ndim != 3 or heads.shape[-1] < 2:
        raise ValueError("q_trust twins needs a critic with at least two heads (like TwinQ).")
    return ranking_reliability(heads[..., :2])


class SupportSet(NamedTuple):
    """States with M support actions each and their (fixed-critic) Q-values."""

    states: Float[Array, "n obs"]
    actions: Float[Array, "n m act"]
    q: Float[Array, "n m"]


def make_qipo_loss(
    path: AbstractPath, beta: float, prediction: str
) -> Callable[[Any, SupportSet, PRNGKeyArray], Float[Array, ""]]:
    """``L_QFM`` (velocity fields) or ``L_QD`` (noise fields) on a batch of support sets."""
    loss = qfm_loss if prediction == "velocity" else qd_loss

    def loss_fn(model: Any, batch: SupportSet, key: PRNGKeyArray) -> Float[Array, ""]:
        return loss(model, path, batch.actions, batch.q, beta, key, batch.states)

    return loss_fn


def renew_supports(
    state: TrainState,
    sampler: Sampler,
    score_q: Callable[..., Any],
    qnet: TwinQ,
    states: Float[Array, "n obs"],
    key: PRNGKeyArray,
    *,
    m: int,
    action_dim: int,
    data_actions: Float[Array, "n act"] | None = None,
) -> SupportSet:
    """Algorithm 2, line 10: M supports per state from the CURRENT policy ``state.ema``.

    Q-values come from the fixed critic ``qnet`` (through ``score_q``, e.g. a jitted
    `ewfm.rl.q_values`); with ``data_actions`` the dataset action is kept as the first
    support of each state.
    """
    sup = draw_supports_jit(
        state.ema, sampler, states, key, m=m, action_dim=action_dim, data_actions=data_actions
    )
    return SupportSet(states, sup, score_supports(qnet, states, sup, score_q=score_q))


def support_stats(s: SupportSet, q_w: Float[Array, "*seeds n m"], beta: float) -> dict[str, float]:
    """Q and weight statistics of support sets ``[..., states, M]`` (seeds pooled); the
    weights are ``M softmax(beta q_w)`` with ``q_w`` the Q rescaled by ``q_norm``."""
    q = np.asarray(s.q).reshape(-1, s.q.shape[-1])
    w = np.asarray(jax.nn.softmax(beta * np.asarray(q_w).reshape(q.shape), axis=-1)) * q.shape[-1]
    return {
        "q_mean": float(q.mean()),
        "q_std_within": float(q.std(axis=-1).mean()),
        "w_max_mean": float(w.max(axis=-1).mean()),
        "w_data_mean": float(w[:, 0].mean()),
    }
