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
import jax.random as jr
import numpy as np
import optax

from .._losses import ed_loss, efm_loss, qfm_loss
from .._nets import MLPField
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import sample
from .._train import fit, init_state
from ._exact import GAUSS_A, GAUSS_C, GAUSS_COV, GAUSS_MEAN, _jit, tilted_closed_form
from ._registry import Outcome, register

Z_TOL = 5.0
BETA = 1.0
N_TRAIN, N_SAMPLES, STEPS = 8192, 4096, 2000


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


def _optimizer(steps: int) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(2e-3, steps, alpha=0.05))


@_jit
def _setup(seed, cond_dim, steps):
    """Network, optimiser state and keys in one program (eager initialisation compiles
    dozens of small programs)."""
    k_net, k_fit, k_s = jr.split(jr.key(seed), 3)
    net = MLPField(2, cond_dim=cond_dim, width=64, depth=2, key=k_net)
    return init_state(net, _optimizer(steps)), k_fit, k_s


_sample = _jit(sample)


def _train_and_sample(
    loss: Callable[..., Any],
    data: tuple[np.ndarray, ...],
    path: AbstractPath,
    *,
    prediction: str,
    solver: str,
    seed: int,
    steps: int,
    n_samples: int,
    cond: np.ndarray | None = None,
) -> np.ndarray:
    """Fit an `MLPField` (width 64, depth 2; `fit`: 4 epochs, batch 256, Adam with cosine
    decay, EMA 0.99) with ``loss(model, path, *batch, BETA, key)``, in float32, and draw
    ``n_samples`` with `sample` (32 steps of ``solver``)."""

    def loss_fn(model, batch, key):
        *arrays, last = batch
        if cond is None:  # efm / ed: (x0, energy)
            return loss(model, path, *arrays, last, BETA, key)
        return loss(model, path, *arrays, BETA, key, last)  # qfm: (actions, q, states)

    with jax.enable_x64(False):
        batch = tuple(jax.device_put(np.asarray(v, np.float32)) for v in data)
        cond_dim = 0 if cond is None else cond.shape[1]
        state, k_fit, k_s = _setup(np.asarray(seed, np.int32), cond_dim, steps)
        res = fit(
            state.model,
            loss_fn,
            batch,
            key=k_fit,
            optimizer=_optimizer(steps),
            epochs=4,
            batch_size=256,
            steps_per_epoch=steps // 4,
            ema_decay=0.99,
            state=state,
        )
        c = None if cond is None else jax.device_put(np.asarray(cond, np.float32))
        out = _sample(
            res.state.ema,
            path,
            k_s,
            (n_samples, 2),
            c,
            solver=solver,
            steps=32,
            prediction=prediction,
        )
        return np.asarray(out.x, dtype=np.float64)


def _gaussian_data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(GAUSS_MEAN, GAUSS_COV, size=n)


def _trained_gaussian(
    loss: Callable[..., Any],
    path: AbstractPath,
    label: str,
    *,
    prediction: str,
    solver: str,
    data_seed: int,
    seed: int,
    steps: int,
    n_samples: int,
) -> Outcome:
    """Train on ``N_TRAIN`` samples of ``N(m, S)`` with their energies; z-scores of pi."""
    x0 = _gaussian_data(N_TRAIN, data_seed)
    e = _energy(x0)
    x = _train_and_sample(
        loss,
        (x0, e),
        path,
        prediction=prediction,
        solver=solver,
        seed=seed,
        steps=steps,
        n_samples=n_samples,
    )
    return Outcome(_z_scores(x, np.exp(-BETA * (e - e.min())), label))


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
    return _trained_gaussian(
        loss,
        OTPath(),
        "efm",
        prediction="velocity",
        solver="heun",
        data_seed=0,
        seed=1,
        steps=steps,
        n_samples=n_samples,
    )


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
    return _trained_gaussian(
        loss,
        VPPath(),
        "ed",
        prediction="eps",
        solver="dpm2",
        data_seed=2,
        seed=3,
        steps=steps,
        n_samples=n_samples,
    )


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
    cond = np.random.default_rng(6).uniform(-1, 1, (n_samples, 1))
    x = _train_and_sample(
        loss,
        (actions, q, states),
        OTPath(),
        prediction="velocity",
        solver="heun",
        seed=7,
        steps=steps,
        n_samples=n_samples,
        cond=cond,
    )
    w = np.exp(BETA * (q - q.max(axis=1, keepdims=True)))
    w = (w / w.sum(axis=1, keepdims=True)).reshape(-1)
    return Outcome(_z_scores(x, w, "qfm"))
