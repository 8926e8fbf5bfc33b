"""QIPO building blocks: policy sampling, batched support renewal, Q-weighted losses.

A *policy* here is a state-conditioned field (velocity on the OT path, noise on the VP path)
plus a sampler (`PolicySampler`). Support renewal (Algorithm 2, line 10) draws M actions for
every state from the CURRENT policy in one jitted, chunked program, then scores them once
with the fixed critic; a QIPO epoch then minimises `ewfm.qfm_loss` / `ewfm.qd_loss` on
batches of states with their M supports and Q-values.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._losses import qd_loss, qfm_loss
from .._paths import AbstractPath
from .._sample import integrate
from ._config import Q_NORMS


class PolicySampler(eqx.Module):
    """How actions are drawn from a field: path, solver, steps, and the action box."""

    path: AbstractPath
    solver: str = eqx.field(static=True, default="midpoint")
    steps: int = eqx.field(static=True, default=5)
    prediction: str = eqx.field(static=True, default="velocity")
    clip: float | None = eqx.field(static=True, default=1.0)

    def __call__(
        self, field: Any, states: Float[Array, "n obs"], key: PRNGKeyArray, action_dim: int
    ) -> Float[Array, "n act"]:
        """One action per state: integrate the probability-flow ODE from noise to ``t_min``."""
        x1 = jr.normal(key, (states.shape[0], action_dim))
        a = integrate(
            field,
            self.path,
            x1,
            states,
            solver=self.solver,  # pyright: ignore[reportArgumentType]
            steps=self.steps,
            prediction=self.prediction,  # pyright: ignore[reportArgumentType]
        ).x
        return a if self.clip is None else jnp.clip(a, -self.clip, self.clip)


def draw_supports(
    field: Any,
    sampler: PolicySampler,
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
        a = sampler(field, rep, k, action_dim)
        return a.reshape(per, m_draw, action_dim)

    out = jax.lax.map(one, (s_chunks, keys)).reshape(n_chunks * per, m_draw, action_dim)[:n]
    if data_actions is not None:
        out = jnp.concatenate([data_actions[:, None, :], out], axis=1)
    return out


draw_supports_jit = eqx.filter_jit(draw_supports)


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
