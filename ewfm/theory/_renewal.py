"""Eq. (5.4) in docs/method.md: n support renewals with beta give the policy ``mu exp(n beta Q)``.

Two checks. ``eq-5.4`` runs the library's renewal (`ewfm.rl.renew_supports`, which draws the
supports with `ewfm.rl.draw_supports` and the library sampler) and the library's weights
(read out of `ewfm.qfm_loss`), with every fit exact, as (5.4) assumes: the policy after a
renewal is the exact minimiser of ``qfm_loss`` on the renewed supports. Its answer is a
sample, so it is compared with the closed form in standard errors. ``eq-5.4-tilts`` is the
paper's maths alone, exactly: the tilt by ``exp(beta Q)`` iterated three times.
"""

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._losses import qfm_loss
from .._nets import TwinQ
from .._paths import AbstractPath, OTPath
from .._sample import Sampler
from .._train import TrainState
from .._weights import grouped_energy_weights
from ._exact import (
    EXACT_TOL,
    GAUSS_A,
    GAUSS_C,
    GAUSS_COV,
    GAUSS_MEAN,
    Z_TOL,
    _arr,
    _jit,
    _jitted,
    _max,
    _paths,
    _rel,
    _start,
    _VelocityField,
    gauss_2d,
    pushforward,
    tilted_closed_form,
)
from ._reference import FiniteData, guided_velocity
from ._registry import Outcome, register

# -- eq-5.4: the library's renewal with exact fits --------------------------------------------

RENEW_BETA = 1.0
RENEW_ROUNDS = 2
RENEW_STATES = 32  # independent states per context sign (the replicates of the z-scores)
RENEW_M = 64  # support actions per state
RENEW_STEPS = 16  # midpoint steps of the policy sampler


class _Still(AbstractPath):
    """A degenerate path, ``x_t = x0`` at every ``t`` (``alpha = 1``, ``sigma = 0``): the
    conditional velocity is 0, so a loss with the identity as field is
    ``mean_j w_j ||a_j||^2`` and its gradient in the actions gives the weights ``w_j``."""

    t_min: float = 0.0

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, float))

    def sigma(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def d_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def d_sigma(self, t):
        return jnp.zeros_like(jnp.asarray(t, float))

    def t_of_log_snr(self, lam):
        return jnp.zeros_like(jnp.asarray(lam, float))


def _identity(x: Array, t: Array, cond: Any = None) -> Array:
    return x


@_jit
def _loss_weights(loss, q, beta, states):
    """The per-support weights of ``loss`` (`ewfm.qfm_loss`: ``M softmax_j(beta Q_ij)``),
    read by autodiff on `_Still` (independent of the key: nothing is random there)."""
    n, m = q.shape
    key = jnp.zeros(2, jnp.uint32)

    def total(a):
        return loss(_identity, _Still(), a, q, beta, key, states)

    return jax.grad(total)(jnp.ones((n, m, 1), q.dtype))[..., 0] * (n * m / 2)


class _Policy(eqx.Module):
    """The current policy as a field of ``(a_t, t, state)``, ``state = [s, k]``.

    Round 0 (``behaviour``): the exact velocity of ``mu = N(0, 1)`` on ``path``. Later
    rounds: the exact minimiser of the Q-weighted loss on the last support set, which is the
    velocity of state k's supports ``a_kj`` with probabilities ``w_kj / M`` (Theorem 4.3 with
    the supports as the data set). One pytree structure for every round: one compilation.
    """

    points: Array  # [states, M, 1]
    log_w: Array  # [states, M]
    behaviour: Array  # [] bool
    path: AbstractPath

    def __call__(self, x, t, cond):
        k = cond[1].astype(jnp.int32)
        m = self.points.shape[1]
        atoms = FiniteData(self.points[k], self.log_w[k], jnp.zeros(m))
        v_atoms = guided_velocity(atoms, self.path, x, t, 0.0)
        p = self.path
        # N(0, I) on a Gaussian path: x_t ~ N(0, alpha^2 + sigma^2), an affine flow
        var = p.alpha(t) ** 2 + p.sigma(t) ** 2
        v_mu = (p.alpha(t) * p.d_alpha(t) + p.sigma(t) * p.d_sigma(t)) / var * x
        return jnp.where(self.behaviour, v_mu, v_atoms)


def _bandit_q(qnet: Any, states: Array, actions: Array) -> Array:
    """The critic: ``Q(s, a) = -(a - s)^2 / 2`` exactly (``qnet`` is not used)."""
    return -0.5 * (actions[..., 0] - states[:, None, 0]) ** 2


@_jit
def _renew(renew, state, sampler, qnet, states, key):
    """``renew`` (`ewfm.rl.renew_supports`) in one program with the checks' compile options."""
    return renew(state, sampler, _bandit_q, qnet, states, key, m=RENEW_M, action_dim=1)


def _z_scores(values: np.ndarray, target: float) -> float:
    """``|mean - target| / standard error`` of one value per independent state."""
    se = values.std(ddof=1) / np.sqrt(values.shape[0])
    return float(abs(values.mean() - target) / se)


@register(
    "eq-5.4",
    "Eq. 5.4: n = 2 renewals by the library (renew_supports, qfm_loss weights, exact fits) "
    "give mu exp(n beta Q) (z-scores)",
    Z_TOL,
)
def _eq_5_4(
    *,
    tolerance: float,
    renew: Callable | None = None,
    loss: Callable = qfm_loss,
) -> Outcome:
    """The contextual bandit of the RL tests: behaviour ``mu = N(0, 1)`` in contexts
    ``s = +-1``, ``Q(s, a) = -(a - s)^2 / 2``, beta = 1, 32 states per context with M = 128
    supports each, OT path, midpoint sampler (32 steps). Each round, ``renew``
    (`ewfm.rl.renew_supports`) draws M supports per state from the current policy and scores
    them with the critic; the next policy is the exact minimiser of ``loss`` on them
    (`_Policy`, with the weights read out of ``loss``). After n = 2 rounds the policy is a
    weighted set of supports per state; its mean and variance per state, averaged over the
    32 states of each context, against the closed form ``mu exp(n beta Q) = N(n beta s / (1 +
    n beta), 1 / (1 + n beta))``. Errors are z-scores (the standard error from the spread
    over the independent states); the renewal's self-normalised weights bias each state by
    O(1/M), a fraction of a standard error here."""
    from .. import rl  # the RL wing (no extra needed for these functions)

    renew = rl.renew_supports if renew is None else renew
    n, m = 2 * RENEW_STATES, RENEW_M
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    states = _arr(np.stack([sign, np.arange(n, dtype=float)], axis=1))
    path = OTPath()
    sampler = Sampler(path, "midpoint", RENEW_STEPS, "velocity")
    # renew_supports passes the critic to the scorer; this scorer is exact and ignores it
    qnet = eqx.filter_eval_shape(lambda: TwinQ(2, 1, width=2, depth=1, key=jax.random.key(0)))
    points, log_w, behaviour = np.zeros((n, m, 1)), np.zeros((n, m)), True
    for r in range(RENEW_ROUNDS):
        field = _Policy(_arr(points), _arr(log_w), _arr(behaviour), path)
        state = TrainState(field, field, (), _arr(np.zeros((), np.int32)))
        key = _arr(np.array([0, 100 + r], np.uint32))
        sup = _renew(renew, state, sampler, qnet, states, key)
        w = np.asarray(_loss_weights(loss, sup.q, _arr(RENEW_BETA), sup.states))
        points, behaviour = np.asarray(sup.actions), False
        with np.errstate(divide="ignore"):
            log_w = np.log(w / m)
    p = np.exp(log_w)
    mean = np.sum(p * points[..., 0], axis=1)
    var = np.sum(p * (points[..., 0] - mean[:, None]) ** 2, axis=1)
    nb = RENEW_ROUNDS * RENEW_BETA
    errors: dict[str, float] = {}
    info: dict[str, float] = {}
    for s in (1.0, -1.0):
        rows = sign == s
        errors[f"s={s:+.0f}/mean"] = _z_scores(mean[rows], nb * s / (1 + nb))
        errors[f"s={s:+.0f}/variance"] = _z_scores(var[rows], 1 / (1 + nb))
        info[f"s={s:+.0f}/mean"] = float(mean[rows].mean())
        info[f"s={s:+.0f}/variance"] = float(var[rows].mean())
    info["max |sum_j w_j - M| per state"] = _max(np.abs(np.exp(log_w).sum(axis=1) * m - m))
    return Outcome(errors, info)


# -- eq-5.4-tilts: the paper's maths, exactly ---------------------------------------------------


@register(
    "eq-5.4-tilts",
    "Eq. 5.4: three tilts by exp(beta Q) (exact L_QFM minimisers through the sampler; a "
    "support multiset reweighted by grouped_energy_weights) give mu exp(3 beta Q)",
    EXACT_TOL,
    subject="paper maths",
)
def _eq_5_4_tilts(
    *,
    tolerance: float,
    only_paths: Any = None,
    weights: Callable = grouped_energy_weights,
    velocity: Callable = guided_velocity,
) -> Outcome:
    """(a) Gaussian behaviour policy, ``Q = -1/2 (a-c)^T A (a-c)``, beta = 0.7: each round
    integrates the exact minimiser of L_QFM for the current policy (the guided velocity of the
    reference, with ``E = -Q``) with the adaptive sampler, and the next round starts from the
    pushforward. After 3 rounds: precision ``S^{-1} + 3 beta A`` (closed form). (b) Finite
    action set, ``exp(beta Q) = (1, 2, 3, 4)``, uniform mu: round r holds the current policy
    as a support multiset (action a repeated ``k_a^r`` times, built from the previous round's
    output) and reweights it with ``grouped_energy_weights(-Q, beta)``; after 3 rounds against
    ``mu exp(3 beta Q) / Z`` in exact rational arithmetic. No library renewal or loss runs
    here (that is ``eq-5.4``)."""
    errors: dict[str, float] = {}
    beta, n_rounds = 0.7, 3
    m_n, s_n = tilted_closed_form(GAUSS_MEAN, GAUSS_COV, GAUSS_A, GAUSS_C, n_rounds * beta)
    for pname, path in _paths(only=only_paths):
        mean, cov = GAUSS_MEAN, GAUSS_COV
        for _ in range(n_rounds):
            data, _ = gauss_2d(mean, cov)
            m1, s1 = tilted_closed_form(mean, cov, GAUSS_A, GAUSS_C, beta)
            field = _VelocityField(data, path, _arr(beta), velocity)
            mean, cov = pushforward(field, path, *_start(m1, s1, path))
        errors[f"{pname}/gaussian/mean"] = _rel(mean, m_n)
        errors[f"{pname}/gaussian/cov"] = _rel(cov, s_n)
    k = np.array([1, 2, 3, 4])
    b2 = 0.5
    q_vals = np.log(k) / b2  # exp(b2 Q) = k
    mult = np.ones(4, dtype=int)
    probs = np.full(4, 0.25)
    worst = 0.0
    for r in range(n_rounds):
        support = np.repeat(np.arange(4), mult)
        w = np.asarray(_jitted(weights)(_arr(-q_vals[support][None, :]), _arr(b2)))[0]
        probs = np.bincount(support, weights=w, minlength=4) / support.shape[0]
        if r + 1 < n_rounds:
            m_next = int(np.sum(k ** (r + 1)))
            target = probs * m_next
            worst = max(worst, float(np.max(np.abs(target - np.round(target)))) / m_next)
            mult = np.maximum(np.round(target).astype(int), 0)
    exact = [Fraction(int(v) ** n_rounds, int(np.sum(k**n_rounds))) for v in k]
    errors["finite/multiset representable"] = worst
    errors["finite/policy"] = max(
        abs(float(p) - float(e)) for p, e in zip(probs, exact, strict=True)
    )
    return Outcome(errors)
