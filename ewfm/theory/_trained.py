"""Trained checks (``ewfm verify-theorems --trained``): learn pi with the library's losses.

A small `MLPField` is trained with `fit` on samples of the Gaussian ``p = N(m, S)`` with the
quadratic energy ``E(x) = 1/2 (x-c)^T A (x-c)``, then sampled with `sample`; the sample mean
and covariance are compared with the closed form ``pi = N(m*, S*)``.

Tolerance, from the sample sizes: the training set weighted by ``exp(-beta E)`` carries
``N_eff = (sum w)^2 / sum w^2`` effective samples of pi (Kish), and ``n`` model samples are
drawn, so each mean entry has standard error ``sqrt(S*_kk (1/N_eff + 1/n))`` and each
covariance entry ``sqrt((S*_kk S*_ll + S*_kl^2) (1/N_eff + 1/n))``. The reported error is the
largest ``|error| / standard error`` over the 2 + 3 entries; the check passes below 5 (a
Gaussian z-score over 5 has probability < 1e-5 per entry), so what is left for the network's
own error is what the statistics cannot explain.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._losses import ed_loss, efm_loss, qfm_loss
from .._nets import MLPField
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import sample
from .._train import fit
from ._exact import GAUSS_A, GAUSS_C, GAUSS_COV, GAUSS_MEAN, tilted_closed_form
from ._registry import Outcome, register

Z_TOL = 5.0
BETA = 1.0


def _energy(x: np.ndarray) -> np.ndarray:
    d = x - GAUSS_C
    return 0.5 * np.einsum("...i,ij,...j->...", d, GAUSS_A, d)


def _z_scores(x: np.ndarray, w: np.ndarray, label: str) -> dict[str, float]:
    """``|error| / standard error`` of the mean and covariance of samples ``x`` of pi."""
    m_star, s_star = tilted_closed_form(GAUSS_MEAN, GAUSS_COV, GAUSS_A, GAUSS_C, BETA)
    n_eff = float(np.sum(w) ** 2 / np.sum(w**2))
    n = x.shape[0]
    inv = 1.0 / n_eff + 1.0 / n
    mean, cov = x.mean(0), np.cov(x.T)
    out = {}
    for k in range(2):
        se = np.sqrt(s_star[k, k] * inv)
        out[f"{label}/mean[{k}]"] = abs(mean[k] - m_star[k]) / se
    for i, j in ((0, 0), (0, 1), (1, 1)):
        se = np.sqrt((s_star[i, i] * s_star[j, j] + s_star[i, j] ** 2) * inv)
        out[f"{label}/cov[{i}{j}]"] = abs(cov[i, j] - s_star[i, j]) / se
    return out


def _train_and_sample(
    loss_fn: Callable[..., Any],
    data: Any,
    path: AbstractPath,
    *,
    cond_dim: int,
    prediction: str,
    n_samples: int,
    steps: int,
    seed: int,
    cond: Any = None,
    solver: str = "heun",
) -> np.ndarray:
    key = jr.key(seed)
    k_net, k_fit, k_s = jr.split(key, 3)
    net = MLPField(2, cond_dim=cond_dim, width=64, depth=2, key=k_net)
    opt = optax.adam(optax.cosine_decay_schedule(2e-3, steps, alpha=0.05))
    res = fit(
        net,
        loss_fn,
        data,
        key=k_fit,
        optimizer=opt,
        epochs=4,
        batch_size=256,
        steps_per_epoch=steps // 4,
        ema_decay=0.99,
    )
    out = sample(
        res.state.ema,
        path,
        k_s,
        (n_samples, 2),
        cond,
        solver=solver,
        steps=32,
        prediction=prediction,
    )
    return np.asarray(out.x, dtype=np.float64)


def _gaussian_data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(GAUSS_MEAN, GAUSS_COV, size=n)


N_TRAIN, N_SAMPLES, STEPS = 8192, 4096, 2000


@register(
    "trained-efm",
    "Trained: an MLP fit with efm_loss (OT) samples pi = N(m*, S*) (z-scores)",
    Z_TOL,
    trained=True,
)
def _trained_efm(
    *, tolerance: float, loss: Callable = efm_loss, steps: int = STEPS, n_samples: int = N_SAMPLES
) -> Outcome:
    """efm_loss on the OT path, Heun sampler (32 steps)."""
    x0 = _gaussian_data(N_TRAIN, 0)
    e = _energy(x0)
    path = OTPath()

    def loss_fn(model, batch, key):
        x, en = batch
        return loss(model, path, x, en, BETA, key)

    with jax.enable_x64(False):
        x = _train_and_sample(
            loss_fn,
            (jnp.asarray(x0, jnp.float32), jnp.asarray(e, jnp.float32)),
            path,
            cond_dim=0,
            prediction="velocity",
            n_samples=n_samples,
            steps=steps,
            seed=1,
        )
    return Outcome(_z_scores(x, np.exp(-BETA * (e - e.min())), "efm"))


@register(
    "trained-ed",
    "Trained: an MLP fit with ed_loss (VP, noise prediction) samples pi = N(m*, S*)",
    Z_TOL,
    trained=True,
)
def _trained_ed(
    *, tolerance: float, loss: Callable = ed_loss, steps: int = STEPS, n_samples: int = N_SAMPLES
) -> Outcome:
    """ed_loss on the VP path, noise prediction, DPM-Solver-2M (32 steps) down to t_min."""
    x0 = _gaussian_data(N_TRAIN, 2)
    e = _energy(x0)
    path = VPPath()

    def loss_fn(model, batch, key):
        x, en = batch
        return loss(model, path, x, en, BETA, key)

    with jax.enable_x64(False):
        x = _train_and_sample(
            loss_fn,
            (jnp.asarray(x0, jnp.float32), jnp.asarray(e, jnp.float32)),
            path,
            cond_dim=0,
            prediction="eps",
            n_samples=n_samples,
            steps=steps,
            seed=3,
            solver="dpm2",
        )
    return Outcome(_z_scores(x, np.exp(-BETA * (e - e.min())), "ed"))


@register(
    "trained-qfm",
    "Trained: an MLP fit with qfm_loss (OT, M = 16 support actions) samples mu exp(beta Q)",
    Z_TOL,
    trained=True,
)
def _trained_qfm(
    *, tolerance: float, loss: Callable = qfm_loss, steps: int = STEPS, n_samples: int = N_SAMPLES
) -> Outcome:
    """Behaviour policy ``mu(a|s) = N(m, S)`` for every state ``s ~ U[-1, 1]``,
    ``Q(s, a) = -E(a)``; qfm_loss with 16 support actions per state; sampled for random
    states. N_eff counts the within-state weights ``exp(beta Q)`` over all support actions
    (the self-normalisation over 16 actions adds a small bias that this ignores)."""
    n_states, m = N_TRAIN // 16, 16
    actions = _gaussian_data(n_states * m, 4).reshape(n_states, m, 2)
    q = -_energy(actions)
    states = np.random.default_rng(5).uniform(-1, 1, (n_states, 1))
    path = OTPath()

    def loss_fn(model, batch, key):
        a, qq, s = batch
        return loss(model, path, a, qq, BETA, key, s)

    cond = np.random.default_rng(6).uniform(-1, 1, (n_samples, 1))
    with jax.enable_x64(False):
        x = _train_and_sample(
            loss_fn,
            tuple(jnp.asarray(v, jnp.float32) for v in (actions, q, states)),
            path,
            cond_dim=1,
            prediction="velocity",
            n_samples=n_samples,
            steps=steps,
            seed=7,
            cond=jnp.asarray(cond, jnp.float32),
        )
    w = np.exp(BETA * (q - q.max(axis=1, keepdims=True)))
    w = (w / w.sum(axis=1, keepdims=True)).reshape(-1)
    return Outcome(_z_scores(x, w, "qfm"))
