"""The exact checks: each compares library functions with an exact reference in float64.

Every check function takes keyword-only *ingredients* -- the library functions (or reference
formulas) under test -- with the library's own as defaults. The tests replace one ingredient
by a deliberately wrong one and assert that the check then fails.

Errors are relative to the size of the reference: ``max|got - ref| / max(1, max|ref|)``.
On 2 CPU cores the run time is tracing and XLA compilation, not running, so: set-up is done
in numpy (no small eager programs); the paths are not compiled in (`_SwitchPath` picks one by
a traced index, so one program serves them all); and a check keeps its reference and its
ingredient in separate programs (a broken twin recompiles only the ingredient's).
"""

import decimal
import functools
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import ArrayLike, Float, Int

from .._losses import cfm_loss, denoising_loss, ed_loss, efm_loss, qd_loss, qfm_loss
from .._nets import MLPField
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import CFGField, EnergyGuidedField, integrate, to_eps, to_velocity
from .._weights import energy_weights, grouped_energy_weights
from ._reference import (
    Data,
    FiniteData,
    GaussianMixture,
    gaussian_data,
    guided_score,
    guided_velocity,
    intermediate_energy,
    log_marginal,
    posterior_logits,
    posterior_mean,
)
from ._registry import Outcome, register

EXACT_TOL = 1e-6
"""Tolerance of the exact checks: far above float64 round-off (~1e-13 here), far below any
modelling error. The sampler checks are limited by the ODE solver's rtol = atol = 1e-10."""

SOLVER_TOL = 1e-10
T_END = 1e-3  # where the sampler checks stop (VP's t_min); x0 is recovered from there
T_START = 1.0 - 1e-3  # where they start: a score-guided velocity is 0 * inf at t = 1 on OT
N_POINTS = 64

# Compile options: these programs run once or twice, so compile time is what counts. XLA's
# backend optimisations off and its older (non-MLIR) CPU fusion emitters measured about a
# third and then half of the compile time, with the same float64 results to round-off.
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`eqx.filter_jit` with compile-time-saving options (see `_COMPILER_OPTIONS`)."""
    return eqx.filter_jit(fn, compiler_options=_COMPILER_OPTIONS)  # pyright: ignore[reportCallIssue]


def _arr(x: Any) -> jax.Array:
    """numpy data as a JAX array: `jax.device_put` (``jnp.asarray`` compiles a program per
    shape)."""
    return jax.device_put(np.asarray(x))


@functools.cache
def _jitted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``_jit(fn)``, one wrapper per function (weights called on set-up data)."""
    return _jit(fn)


def _random_mlps(seed: int, n: int | None = None, *, dim: int, cond_dim: int = 0) -> Any:
    """`MLPField` s (width 32, depth 2; ``n`` of them stacked on a leading axis) with random
    parameters drawn in numpy: matrices ``N(0, 1/fan_in)``, vectors ``N(0, 1)``. Any
    parameters define a field for the identities; numpy draws compile nothing."""
    shapes = eqx.filter_eval_shape(
        lambda: MLPField(dim, cond_dim=cond_dim, width=32, depth=2, key=jr.key(0))
    )
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        scale = 1.0 / np.sqrt(leaf.shape[-1]) if len(leaf.shape) == 2 else 1.0
        return _arr(rng.standard_normal(leaf.shape if n is None else (n, *leaf.shape)) * scale)

    return jax.tree.map(draw, shapes)


def paths(
    rectified: bool = False, only: Sequence[str] | None = None
) -> list[tuple[str, AbstractPath]]:
    """The paths the checks run on: OT and VP, plus OT with ``sigma_min = 0.1`` if asked.

    ``only`` keeps the named ones (every check takes ``only_paths``: quicker runs in tests).
    """
    out: list[tuple[str, AbstractPath]] = [("OT", OTPath())]
    if rectified:
        out.append(("OT(smin=0.1)", OTPath(sigma_min=0.1)))
    out.append(("VP", VPPath()))
    return [(n, p) for n, p in out if only is None or n in only]


_ALL_PATHS: tuple[AbstractPath, ...] = tuple(p for _, p in paths(rectified=True))


class _SwitchPath(AbstractPath):
    """One of the library paths of `paths`, chosen by a traced index.

    Every method calls each path's own method and selects the chosen one's output, so a
    check runs exactly the library's code while one compiled program serves all paths. (No
    `lax.switch`: under `vmap` its batching rule costs seconds of tracing here.) The paths
    not chosen are evaluated at a safe time (``t = 0.5``, ``lambda = 0``), so their values
    and gradients are finite and the selection's gradient is exact.
    """

    index: Int[ArrayLike, ""]
    t_min: Float[ArrayLike, ""]  # pyright: ignore[reportIncompatibleVariableOverride]
    choices: tuple[AbstractPath, ...] = eqx.field(static=True, default=_ALL_PATHS)

    def _call(self, method: str, *args: Any) -> Any:
        *rest, t = args  # every method takes the time (or log-SNR) last
        safe = 0.0 if method == "t_of_log_snr" else 0.5
        outs = [
            getattr(path, method)(*rest, jnp.where(self.index == k, t, safe))
            for k, path in enumerate(self.choices)
        ]
        return jax.tree.map(
            lambda *o: jnp.select([self.index == k for k in range(len(o))], o), *outs
        )

    def alpha(self, t):
        return self._call("alpha", t)

    def sigma(self, t):
        return self._call("sigma", t)

    def d_alpha(self, t):
        return self._call("d_alpha", t)

    def d_sigma(self, t):
        return self._call("d_sigma", t)

    def t_of_log_snr(self, lam):
        return self._call("t_of_log_snr", lam)

    def log_snr(self, t):
        return self._call("log_snr", t)

    def sample(self, x0, eps, t):
        return self._call("sample", x0, eps, t)

    def velocity_from_score(self, score, x, t):
        return self._call("velocity_from_score", score, x, t)

    def score_from_velocity(self, velocity, x, t):
        return self._call("score_from_velocity", velocity, x, t)

    def score_from_eps(self, eps, t):
        return self._call("score_from_eps", eps, t)

    def eps_from_score(self, score, t):
        return self._call("eps_from_score", score, t)

    def velocity_from_eps(self, eps, x, t):
        return self._call("velocity_from_eps", eps, x, t)

    def eps_from_velocity(self, velocity, x, t):
        return self._call("eps_from_velocity", velocity, x, t)


def _paths(
    rectified: bool = False, only: Sequence[str] | None = None
) -> list[tuple[str, _SwitchPath]]:
    """`paths` as `_SwitchPath` s: a check compiles once for all of them (and the same
    program whatever ``only`` keeps)."""
    every = paths(rectified)
    choices = tuple(p for _, p in every)
    index = {name: i for i, (name, _) in enumerate(every)}
    return [
        (name, _SwitchPath(np.asarray(index[name]), np.asarray(float(p.t_min)), choices))
        for name, p in every
        if only is None or name in only
    ]


def _rel(got: Any, ref: Any) -> float:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return float("nan")
    return float(np.max(np.abs(got - ref)) / max(1.0, float(np.max(np.abs(ref)))))


def _max(a: Any) -> float:
    a = np.asarray(a)
    return float(np.max(a)) if np.all(np.isfinite(a)) else float("nan")


# -- toy data ------------------------------------------------------------------------------


def finite_2d() -> tuple[FiniteData, float]:
    """Six points in 2D with non-uniform probabilities and energies; beta = 1.3."""
    pts = np.array([[-1.5, 0.5], [-0.5, -1.0], [0.3, 1.2], [1.0, 0.0], [1.8, -0.7], [0.2, -1.9]])
    p = np.array([0.1, 0.2, 0.15, 0.25, 0.2, 0.1])
    energy = np.array([2.0, 0.3, -0.5, 1.2, 0.0, 2.5])
    return FiniteData(_arr(pts), _arr(np.log(p)), _arr(energy)), 1.3


def uniform_finite(dim: int) -> tuple[FiniteData, float]:
    """Six equally likely points (a data set that *is* a batch); beta = 1.2."""
    if dim == 1:
        pts = np.array([[-1.6], [-0.7], [0.1], [0.6], [1.3], [2.0]])
    else:
        pts = np.asarray(finite_2d()[0].points)
    energy = np.array([1.5, 0.2, -0.4, 0.8, -1.0, 2.2])
    log_p = np.full(6, -np.log(6.0))
    return FiniteData(_arr(pts), _arr(log_p), _arr(energy)), 1.2


def mixture_2d() -> tuple[GaussianMixture, float]:
    """Three Gaussians with a linear energy ``g^T x``; beta = 1."""
    means = np.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]])
    covs = np.array(
        [[[0.3, 0.05], [0.05, 0.2]], [[0.2, -0.04], [-0.04, 0.35]], [[0.25, 0.0], [0.0, 0.15]]]
    )
    w = np.array([0.3, 0.5, 0.2])
    return gaussian_data(means, covs, weights=w, g=np.array([0.8, -0.5])), 1.0


GAUSS_MEAN = np.array([0.5, -0.3])
GAUSS_COV = np.array([[1.0, 0.4], [0.4, 0.6]])
GAUSS_A = np.array([[2.0, 0.3], [0.3, 1.0]])
GAUSS_C = np.array([1.0, 1.0])


def gauss_2d(mean: Any = GAUSS_MEAN, cov: Any = GAUSS_COV) -> tuple[GaussianMixture, float]:
    """One Gaussian with the quadratic energy ``1/2 (x-c)^T A (x-c)``; beta = 1.5."""
    mean, cov = np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    return gaussian_data(mean[None], cov[None], A=GAUSS_A, c=GAUSS_C), 1.5


def tilted_closed_form(
    mean: Any, cov: Any, A: Any, c: Any, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """The tilted Gaussian (docs/method.md, "Closed forms used by the checks"):
    ``S*^{-1} = S^{-1} + beta A``, ``m* = S* (S^{-1} m + beta A c)`` (numpy)."""
    mean, cov, A, c = (np.asarray(v, dtype=np.float64) for v in (mean, cov, A, c))
    s_inv = np.linalg.inv(cov)
    cov_star = np.linalg.inv(s_inv + beta * A)
    return cov_star @ (s_inv @ mean + beta * A @ c), cov_star


def _points(seed: int, data: Data, n: int = N_POINTS) -> tuple[np.ndarray, ...]:
    """Centres (data points or component means), standard normals and times in [0.05, 0.95];
    `_x` turns them into test points where the marginal has its mass (plus some spread)."""
    rng = np.random.default_rng(seed)
    pts = np.asarray(data.points if isinstance(data, FiniteData) else data.means)
    centres = pts[rng.integers(0, pts.shape[0], n)]
    return centres, rng.standard_normal(centres.shape), rng.uniform(0.05, 0.95, n)


def _x(path: AbstractPath, centres: jax.Array, z: jax.Array, t: jax.Array) -> jax.Array:
    a = jax.vmap(path.alpha)(t)[:, None]
    s = jax.vmap(path.sigma)(t)[:, None]
    return a * centres + (s + 0.5 * a) * z


@eqx.filter_jit
def _field_value(field: Callable[..., Any], x: jax.Array, t: jax.Array) -> jax.Array:
    """``field(x, t)`` as an inner jit: the sampler traces its vector field four times, and
    the repeats then reuse the first trace."""
    return field(x, t)


class _VelocityField(eqx.Module):
    """A reference velocity as a field ``(x, t, cond) -> v`` the sampler can integrate."""

    data: Data
    path: AbstractPath
    beta: jax.Array
    velocity: Callable[..., Any] = eqx.field(static=True)

    def __call__(self, x, t, cond=None):
        return _field_value(self._value, x, t)

    def _value(self, x, t):
        return self.velocity(self.data, self.path, x, t, self.beta)


@_jit
def _flow_map(field, path, x1):
    y = integrate(
        field,
        path,
        x1,
        solver="tsit5",
        rtol=SOLVER_TOL,
        atol=SOLVER_TOL,
        t_start=T_START,
        t_end=T_END,
    ).x
    return y, path.alpha(T_END), path.sigma(T_END)


@_jit
def _schedule(path, t):
    return path.alpha(t), path.sigma(t)


def pushforward(
    field: Callable[..., Any], path: AbstractPath, mean1: Any, cov1: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance at ``t = 0`` of ``N(mean1, cov1)`` at ``T_START`` pushed by ``field``.

    For Gaussian data the exact velocities are affine in ``x``, so the flow map is affine:
    integrating ``mean1`` and ``mean1 + L e_j`` (``L L^T = cov1``) with the library's adaptive
    sampler (`integrate`, Tsit5, rtol = atol = 1e-10) gives it exactly, up to the solver's
    tolerance. The flow stops at ``t = 1e-3`` and ``x0`` is recovered from
    ``x_t = alpha x0 + sigma eps`` (``mean / alpha``, ``(cov - sigma^2 I) / alpha^2``) --
    exact for a Gaussian marginal.
    """
    mean1, cov1 = np.asarray(mean1), np.asarray(cov1)
    chol = np.linalg.cholesky(cov1)
    x1 = np.concatenate([mean1[None], mean1[None] + chol.T], axis=0)
    y, a, s = (np.asarray(v) for v in _flow_map(field, path, x1))
    phi = (y[1:] - y[0]).T
    cov = phi @ phi.T - s**2 * np.eye(mean1.shape[0])
    cov = 0.5 * (cov + cov.T)
    return y[0] / a, cov / a**2


def _start(mean: Any, cov: Any, path: AbstractPath) -> tuple[np.ndarray, np.ndarray]:
    """The exact marginal at ``T_START`` of a Gaussian target ``N(mean, cov)``."""
    a, s = (float(v) for v in _schedule(path, np.asarray(T_START)))
    return a * np.asarray(mean), a**2 * np.asarray(cov) + s**2 * np.eye(len(mean))


# -- 1. Lemma 3.2 ----------------------------------------------------------------------------


# Each check with a compiled ingredient keeps the reference and the ingredient in separate
# programs: a broken twin then recompiles only the (small) part holding the ingredient.

_TS = np.linspace(0.05, 0.95, 19)


@_jit
def _lemma_3_2_refs(data, path, centres, z, t):
    x = _x(path, centres, z, t)

    def refs(x, t):
        score = jax.grad(log_marginal, argnums=2)(data, path, x, t, 0.0)
        m = posterior_mean(data, path, x, t, 0.0)
        eps = (x - path.alpha(t) * m) / path.sigma(t)
        vel = jax.grad(path.alpha)(t) * m + jax.grad(path.sigma)(t) * eps
        # the check by hand after Lemma 3.2 in docs/method.md: a point mass at 0 has score
        # -x / sigma^2 and velocity (sigma'/sigma) x (OT: x / t)
        point = jax.grad(path.sigma)(t) / path.sigma(t) * x
        return score, vel, eps, point

    score, vel, eps, point = jax.vmap(refs)(x, t)
    ref = {
        "velocity_from_score": vel,
        "score_from_velocity": score,
        "velocity_from_eps": vel,
        "eps_from_velocity": eps,
        "score_from_eps": score,
        "eps_from_score": eps,
        "to_velocity(score)": vel,
        "to_velocity(eps)": vel,
        "to_eps(score)": eps,
        "to_eps(velocity)": eps,
        "d_alpha": jax.vmap(jax.grad(path.alpha))(_TS),
        "d_sigma": jax.vmap(jax.grad(path.sigma))(_TS),
        "point mass at 0": point,
    }
    return x, (score, vel, eps), ref


@_jit
def _lemma_3_2_vfs(path, x, t, score, vfs):
    """The ingredient ``velocity_from_score`` on the reference score and on a point mass."""
    return {
        "velocity_from_score": jax.vmap(lambda s, x, t: vfs(path, s, x, t))(score, x, t),
        "point mass at 0": jax.vmap(lambda x, t: vfs(path, -x / path.sigma(t) ** 2, x, t))(x, t),
    }


@_jit
def _lemma_3_2_lib(path, x, t, score, vel, eps):
    lib = {
        "score_from_velocity": (path.score_from_velocity, vel),
        "velocity_from_eps": (path.velocity_from_eps, eps),
        "eps_from_velocity": (path.eps_from_velocity, vel),
        "score_from_eps": (lambda e, x, t: path.score_from_eps(e, t), eps),
        "eps_from_score": (lambda s, x, t: path.eps_from_score(s, t), score),
        "to_velocity(score)": (lambda s, x, t: to_velocity(path, s, x, t, "score"), score),
        "to_velocity(eps)": (lambda e, x, t: to_velocity(path, e, x, t, "eps"), eps),
        "to_eps(score)": (lambda s, x, t: to_eps(path, s, x, t, "score"), score),
        "to_eps(velocity)": (lambda v, x, t: to_eps(path, v, x, t, "velocity"), vel),
    }
    got = {k: jax.vmap(fn)(inp, x, t) for k, (fn, inp) in lib.items()}
    got["d_alpha"], got["d_sigma"] = jax.vmap(path.d_alpha)(_TS), jax.vmap(path.d_sigma)(_TS)
    return got


def _default_vfs(path, score, x, t):
    return path.velocity_from_score(score, x, t)


@register(
    "lemma-3.2",
    "Lemma 3.2: velocity/score/noise conversions give the exact v, grad log p_t, eps",
    EXACT_TOL,
)
def _lemma_3_2(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    velocity_from_score: Callable = _default_vfs,
) -> Outcome:
    """Data: the Gaussian mixture (non-Gaussian ``p_t``). Reference score by autodiff of the
    closed-form ``log p_t``; reference velocity as the posterior mean of
    ``alpha_t' x0 + sigma_t' eps`` with ``alpha_t'``, ``sigma_t'`` by autodiff of the
    schedule; reference noise ``E[eps | x_t]``. Every library conversion (path methods,
    `to_velocity`, `to_eps`) maps one into the others; plus the point mass at 0 on
    the OT path (``v = x / t``)."""
    data, _ = mixture_2d()
    centres, z, t = _points(1, data)
    errors: dict[str, float] = {}
    for pname, path in _paths(rectified=True, only=only_paths):
        x, inputs, ref = _lemma_3_2_refs(data, path, centres, z, t)
        got = _lemma_3_2_lib(path, x, t, *inputs)
        got |= _lemma_3_2_vfs(path, x, t, inputs[0], velocity_from_score)
        for q in ref:
            errors[f"{pname}/{q}"] = _rel(got[q], ref[q])
    return Outcome(errors)


# -- 2. Theorem 4.1: continuity equation, and the sampler's pushforward ---------------------


@_jit
def _continuity_refs(cases, path):
    """Test points and ``grad_x log q_t``, ``d_t log q_t`` (autodiff of the closed form)."""

    def one(data, centres, z, t, beta):
        x = _x(path, centres, z, t)
        lq = lambda y, s: log_marginal(data, path, y, s, beta)
        gx, dt = jax.vmap(jax.grad(lq, argnums=(0, 1)))(x, t)  # one backward pass for both
        return x, gx, dt

    return {name: one(*case) for name, case in cases.items()}


@_jit
def _continuity_velocity(cases, path, x, velocity):
    """``u`` and ``div u`` (forward-mode Jacobian) at the test points."""

    def one(data, t, beta, x):
        def value_and_div(y, t):
            def u(y):
                v = velocity(data, path, y, t, beta)
                return v, v

            jac, v = jax.jacfwd(u, has_aux=True)(y)  # the value comes with the Jacobian
            return v, jnp.trace(jac)

        return jax.vmap(value_and_div)(x, t)

    return {name: one(data, t, beta, x[name]) for name, (data, _, _, t, beta) in cases.items()}


@register(
    "theorem-4.1-continuity",
    "Theorem 4.1: u^beta_t solves d/dt q_t + div(q_t u^beta_t) = 0 at many (x, t)",
    EXACT_TOL,
    subject="paper maths",
)
def _theorem_4_1_continuity(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    velocity: Callable = guided_velocity,
) -> Outcome:
    """Paper maths (``u^beta`` is the reference `guided_velocity`; the library learns it with
    `efm_loss`, checked by ``theorem-4.3`` and ``trained-efm``). Residual
    ``d_t log q_t + div u + u . grad log q_t`` (the continuity equation divided by
    ``q_t``) relative to ``1 + |each term|``, with ``q_t`` in closed form, ``u^beta`` from the
    guided-posterior formula (library conditional velocities) and every derivative by
    autodiff; finite data set and Gaussian mixture, three paths."""
    cases = {}
    for dname, (data, beta) in (("finite", finite_2d()), ("mixture", mixture_2d())):
        cases[dname] = (data, *_points(3, data), beta)
    errors: dict[str, float] = {}
    for pname, path in _paths(rectified=True, only=only_paths):
        refs = _continuity_refs(cases, path)
        vel = _continuity_velocity(cases, path, {k: v[0] for k, v in refs.items()}, velocity)
        for dname, (_, gx, dt) in refs.items():
            u, div = (np.asarray(a) for a in vel[dname])
            dt = np.asarray(dt)
            flux = np.sum(u * np.asarray(gx), axis=1)
            res = np.abs(dt + div + flux) / (1 + np.abs(dt) + np.abs(div) + np.abs(flux))
            errors[f"{pname}/{dname}"] = _max(res)
    return Outcome(errors)


@register(
    "theorem-4.1-pushforward",
    "Theorem 4.1: the adaptive sampler on u^beta maps noise to pi = N(m*, S*)",
    EXACT_TOL,
    subject="paper maths",
)
def _theorem_4_1_pushforward(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    velocity: Callable = guided_velocity,
) -> Outcome:
    """Paper maths run through the library sampler: Gaussian data with a quadratic energy;
    the exact guided velocity (the reference `guided_velocity`) integrated from
    ``q_1`` with `ewfm.integrate` (Tsit5, rtol = atol = 1e-10); the affine flow map gives the
    pushforward's mean and covariance, compared with the closed form ``N(m*, S*)``
    (docs/method.md)."""
    data, beta = gauss_2d()
    m_star, s_star = tilted_closed_form(GAUSS_MEAN, GAUSS_COV, GAUSS_A, GAUSS_C, beta)
    errors: dict[str, float] = {}
    for pname, path in _paths(only=only_paths):
        field = _VelocityField(data, path, _arr(beta), velocity)
        mean, cov = pushforward(field, path, *_start(m_star, s_star, path))
        errors[f"{pname}/mean"] = _rel(mean, m_star)
        errors[f"{pname}/cov"] = _rel(cov, s_star)
    return Outcome(errors)


# -- 3. Theorem 4.3 and 6. Corollary 4.8: exact expected losses on a grid -------------------


def _grid(path: AbstractPath) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12 Gauss-Legendre times in [0.05, 1] x 181 points in [-4.5, 4.5]; weights."""
    nodes, wts = np.polynomial.legendre.leggauss(12)
    t0 = 0.05
    tn, tw = t0 + (nodes + 1) * (1 - t0) / 2, wts * (1 - t0) / 2
    xg = np.linspace(-4.5, 4.5, 181)
    T, X = np.meshgrid(tn, xg, indexing="ij")
    H = np.broadcast_to(tw[:, None] * (xg[1] - xg[0]), T.shape)
    return T.reshape(-1), X.reshape(-1, 1), H.reshape(-1)


@_jit
def _grid_case(data, path, T, X, w, beta, velocity, eps):
    n = data.points.shape[0]
    log_z = jax.nn.logsumexp(data.log_p - beta * data.energy)

    def point(x, t):
        a, s = path.alpha(t), path.sigma(t)
        e = (x[None, :] - a * data.points) / s
        ps = jax.vmap(lambda x0, ei: path.sample(x0, ei, t))(data.points, e)
        log_w = jnp.log(w / n) - 0.5 * jnp.sum(e**2, axis=1) - jnp.log(s * jnp.sqrt(2 * jnp.pi))
        log_rho = (
            log_marginal(data, path, x, t, 0.0)
            - intermediate_energy(data, path, x, t, beta)
            - log_z
        )
        post = jax.nn.softmax(log_w)
        return {
            "W": jnp.exp(log_w),
            "rho": jnp.exp(log_rho),
            "velocity": (ps.velocity, post @ ps.velocity, velocity(data, path, x, t, beta)),
            "eps": (ps.eps, post @ ps.eps, eps(data, path, x, t, beta)),
            "score": (
                path.score_from_eps(post @ ps.eps, t),
                path.score_from_eps(eps(data, path, x, t, beta), t),
            ),
        }

    return jax.vmap(point)(X, T)


def _grid_losses(field, X, T, H, W, tgt, rho, mt):
    f = jax.vmap(lambda x, t: field(x, t, None))(X, T)
    cond = jnp.sum(H[:, None] * W * jnp.sum((f[:, None, :] - tgt) ** 2, axis=-1))
    marg = jnp.sum(H * rho * jnp.sum((f - mt) ** 2, axis=-1))
    return marg, cond


@_jit
def _grid_eval(fields, *args):
    """Both losses for a stack of fields (`eqx.filter_vmap`), and both gradients for the first."""
    marg, cond = eqx.filter_vmap(lambda f: _grid_losses(f, *args))(fields)
    first = jax.tree.map(lambda v: v[0] if eqx.is_array(v) else v, fields)
    gm = eqx.filter_grad(lambda m: _grid_losses(m, *args)[0])(first)
    gc = eqx.filter_grad(lambda m: _grid_losses(m, *args)[1])(first)
    flat = lambda g: jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(g)])
    return marg, cond, flat(gm), flat(gc)


def _autodiff_eps(data, path, x, t, beta):
    """``-sigma_t grad log q_t`` with the score by autodiff of the closed-form ``log q_t``."""
    return path.eps_from_score(jax.grad(log_marginal, argnums=2)(data, path, x, t, beta), t)


Z_TOL = 5.0
"""Bound on the z-scores (``|estimate - exact| / standard error``) of the statistical parts
of the exact checks: a Gaussian z over 5 has probability below 1e-6 per case."""

N_KEYS = 256  # Monte Carlo draws of a library loss per field (theorem-4.3, corollary-4.8)
N_TILE = 8  # the batch holds the data set this many times


def _time_nodes(t_min: float, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights of the uniform average over ``t`` in ``[t_min, 1]``.

    With ``t_min > 0`` (VP) the rule runs in ``log t``: there ``sigma_t' ~ t^(-1/2)``, so the
    loss integrand grows like ``1/t`` near ``t_min`` and is smooth only in ``log t``.
    """
    x, w = np.polynomial.legendre.leggauss(n)
    if t_min > 0:
        lo = np.log(t_min)
        t = np.exp(lo + (x + 1) * (-lo) / 2)
        wt = w * (-lo) / 2 * t
    else:
        t, wt = (x + 1) / 2, w / 2
    return t, wt / (1.0 - t_min)


@_jit
def _expected_loss(fields, path, x0, ratio, t, eps, weight, velocity):
    """The exact expectation over ``t ~ U[t_min, 1]`` and ``eps ~ N(0, 1)`` of the weighted
    regression ``(1/B) sum_b (pi/p)(x0_b) ||f(x_t, t) - target_b||^2`` on a batch holding every
    point equally often: a quadrature over (point, t, eps) nodes with weights ``weight``. The
    target is the velocity if the traced flag ``velocity`` is set, else the noise (one
    program for both)."""
    ps = jax.vmap(path.sample)(x0, eps, t)
    goal = jnp.where(velocity, ps.velocity, ps.eps)

    def one(f):
        out = jax.vmap(lambda x, s: f(x, s, None))(ps.x_t, t)
        return jnp.sum(weight * ratio * jnp.sum((out - goal) ** 2, axis=-1))

    return eqx.filter_vmap(one)(fields)


@_jit
def _sampled_loss(fields, path, x0, energy, beta, keys, loss):
    """The library ``loss(f, path, x0, energy, beta, key)`` for every field and key."""

    def one(f):
        return jax.vmap(lambda k: loss(f, path, x0, energy, beta, k))(keys)

    return eqx.filter_vmap(one)(fields)


def _loss_expectation(
    fields: Any,
    path: AbstractPath,
    t_min: float,
    data: FiniteData,
    beta: float,
    loss: Callable,
    target: str,
) -> tuple[float, float]:
    """The library loss averaged over ``N_KEYS`` keys against its exact expectation, for each
    field: the largest z-score and the largest relative difference.

    The batch holds the 1D data set ``N_TILE`` times, so the loss estimates
    ``sum_i pi_i E_{t, eps} ||f - target_i||^2`` (``pi = softmax(-beta E)``, exact in numpy);
    the expectation is a 48-node Gauss-Legendre rule in ``t`` (`_time_nodes`) times a 32-node
    Gauss-Hermite rule in ``eps`` -- the fields are smooth, so the rule is exact to ~1e-6,
    far below the Monte Carlo error (~1e-2). This ties the library loss (its weights, its
    draws of ``t`` and ``eps``, its targets) to the conditional loss whose gap to the
    marginal one `_loss_gap` checks on a grid.
    """
    pts, energy = np.asarray(data.points), np.asarray(data.energy)
    n = pts.shape[0]
    logit = -beta * energy
    ratio = n * np.exp(logit - np.logaddexp.reduce(logit))  # pi_i / p_i
    tn, tw = _time_nodes(t_min)
    en, ew = np.polynomial.hermite_e.hermegauss(32)  # weight exp(-e^2 / 2)
    ew = ew / np.sqrt(2 * np.pi)
    grid = np.meshgrid(np.arange(n), np.arange(len(tn)), np.arange(len(en)))
    i, a, b = (g.reshape(-1) for g in grid)
    exact = _expected_loss(
        fields,
        path,
        _arr(pts[i]),
        _arr(ratio[i]),
        _arr(tn[a]),
        _arr(en[b][:, None]),
        _arr(tw[a] * ew[b] / n),
        _arr(target == "velocity"),
    )
    keys = _arr(np.stack([np.zeros(N_KEYS), np.arange(N_KEYS)], axis=1).astype(np.uint32))
    x0, e = _arr(np.tile(pts, (N_TILE, 1))), _arr(np.tile(energy, N_TILE))
    got = np.asarray(_sampled_loss(fields, path, x0, e, _arr(beta), keys, loss))
    exact = np.asarray(exact)
    se = got.std(axis=1, ddof=1) / np.sqrt(N_KEYS)
    z = np.abs(got.mean(axis=1) - exact) / se
    return _max(z), _max(np.abs(got.mean(axis=1) - exact) / np.abs(exact))


def _loss_gap(
    target: str,
    velocity: Callable,
    eps: Callable,
    weights: Callable,
    loss: Callable,
    only_paths: Sequence[str] | None = None,
) -> Outcome:
    """``L_marginal(theta) - L_conditional(theta)`` for four random MLP fields, its gradients,
    and the pointwise minimiser of the conditional loss, as exact sums over a (t, x) grid;
    and the library ``loss`` against the conditional loss in expectation.

    1D data set of six equally likely points (the batch is the data set, so the library's
    batch weights ``B softmax(-beta E)`` are exactly ``pi_i / p_i``). The conditional loss
    sums ``(w_i / n) q_t(x | x0_i) ||f - target_i||^2`` over the data at each grid point,
    with the library's weights and conditional targets (`AbstractPath.sample`); the marginal
    loss weighs ``||f - marginal target||^2`` by ``p_t exp(-E_t) / Z`` (finite sums). Both
    use the same grid, so the difference is theta-free exactly when the marginal target is
    the weighted-posterior average of the conditional targets and ``p_t exp(-E_t) / Z`` their
    total weight -- the content of the theorem, whatever the quadrature. The library loss
    itself draws ``t`` and ``eps`` at random, so it enters through its expectation at fixed
    theta (`_loss_expectation`): passing needs every z-score (in ``info``) at most ``Z_TOL``.
    """
    data, beta = uniform_finite(1)
    fields = _random_mlps(10, 4, dim=1)
    w = _jitted(weights)(data.energy, _arr(beta))
    errors: dict[str, float] = {}
    info: dict[str, float] = {}
    ok = True
    for (pname, path), (_, plain) in zip(
        _paths(only=only_paths), paths(only=only_paths), strict=True
    ):
        T, X, H = _grid(path)
        g = _grid_case(data, path, T, X, w, beta, velocity, eps)
        tgt, best, mt = g[target]
        if target == "eps":  # the statement is about scores
            errors[f"{pname}/minimiser"] = _rel(*g["score"])
        else:
            errors[f"{pname}/minimiser"] = _rel(best, mt)
        args = (X, T, H, g["W"], tgt, g["rho"], mt)
        marg, cond, gm, gc = _grid_eval(fields, *args)
        diffs = np.asarray(marg) - np.asarray(cond)
        scale = max(1.0, float(np.max(np.abs(cond))))
        errors[f"{pname}/L_marg - L_cond spread"] = float(np.ptp(diffs)) / scale
        info[f"{pname}/L_marg - L_cond"] = float(diffs[0])
        errors[f"{pname}/gradients"] = _rel(gc, gm)
        z, rel = _loss_expectation(fields, path, float(plain.t_min), data, beta, loss, target)
        name = "efm_loss" if target == "velocity" else "ed_loss"
        info[f"{pname}/E[{name}] z-score"] = z
        info[f"{pname}/E[{name}] relative difference"] = rel
        ok = ok and z <= Z_TOL
    return Outcome(errors, info, ok)


@register(
    "theorem-4.3",
    "Theorem 4.3: L_EFM - L_CEFM is theta-free, gradients agree, argmin L_CEFM = u^beta; "
    "efm_loss estimates L_CEFM",
    EXACT_TOL,
)
def _theorem_4_3(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    velocity: Callable = guided_velocity,
    weights: Callable = energy_weights,
    efm: Callable = efm_loss,
) -> Outcome:
    """Exact expectations (sums over a t-x grid) on a 1D finite data set for four MLPs; the
    marginal target ``u^beta`` from Theorem 4.1's formula; and the mean of ``efm`` over 256
    keys at fixed theta against its exact expectation; see `_loss_gap`."""
    return _loss_gap("velocity", velocity, _autodiff_eps, weights, efm, only_paths)


@register(
    "corollary-4.8",
    "Corollary 4.8: L_ED - L_CED is theta-free (eps form), argmin L_CED = grad log q_t; "
    "ed_loss estimates L_CED",
    EXACT_TOL,
)
def _corollary_4_8(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    eps: Callable = _autodiff_eps,
    weights: Callable = energy_weights,
    ed: Callable = ed_loss,
) -> Outcome:
    """As Theorem 4.3 with the denoising target; the marginal target is
    ``-sigma_t grad log q_t`` with the score by autodiff of the closed-form ``log q_t``."""
    return _loss_gap("eps", guided_velocity, eps, weights, ed, only_paths)


# -- 4. Remark 4.6 -------------------------------------------------------------------------


def _draws(path: AbstractPath, x0: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
    """Recover the times, noises, noisy samples and targets the library losses draw from
    ``key``: the gradient of `cfm_loss` / `denoising_loss` with respect to a field output
    that is a free input is ``2 (output - target) / B`` per sample (no reliance on how the
    losses split the key)."""
    b, d = x0.shape
    c0 = jnp.zeros((b, d))

    def grad(loss, out):
        def total(c):
            return loss(lambda x, t, ci: out(x, t) + ci, path, x0, key, cond=c)

        return jax.grad(total)(c0) * (b / 2)

    u = -grad(cfm_loss, lambda x, t: jnp.zeros_like(x))
    x_t = grad(cfm_loss, lambda x, t: x) + u
    t = (grad(cfm_loss, lambda x, t: jnp.full_like(x, t)) + u)[:, 0]
    eps = -grad(denoising_loss, lambda x, t: jnp.zeros_like(x))
    return {"u": u, "x_t": x_t, "t": t, "eps": eps}


@_jit
def _remark_4_6_refs(path, x0, energy, beta, keys, field, cfield):
    """The draws of every key, the importance-weighted CFM / denoising losses on them, and
    ``qfm_loss`` / ``qd_loss`` (compared with the ingredients ``efm`` / ``ed`` with a
    constant condition)."""
    b = x0.shape[0]
    ratio = jnp.exp(-beta * energy - jax.nn.logsumexp(-beta * energy) + jnp.log(b))
    state = jnp.ones((1, 1))
    out = []
    for key in keys:
        dr = _draws(path, x0, key)
        ps = jax.vmap(path.sample)(x0, dr["eps"], dr["t"])
        f = jax.vmap(lambda x, t: field(x, t, None))(dr["x_t"], dr["t"])
        out.append(
            {
                "draws on path: x_t": (dr["x_t"], ps.x_t),
                "draws on path: u": (dr["u"], ps.velocity),
                "efm_loss": jnp.mean(ratio * jnp.sum((f - dr["u"]) ** 2, axis=1)),
                "ed_loss": jnp.mean(ratio * jnp.sum((f - dr["eps"]) ** 2, axis=1)),
                "qfm_loss = efm_loss(E=-Q)": qfm_loss(
                    cfield, path, x0[None], -energy[None], beta, key, state
                ),
                "qd_loss = ed_loss(E=-Q)": qd_loss(
                    cfield, path, x0[None], -energy[None], beta, key, state
                ),
            }
        )
    return out


@_jit
def _remark_4_6_loss(path, x0, energy, beta, keys, field, cfield, loss):
    """The ingredient ``loss`` (``efm`` or ``ed``), without and with a condition."""
    cond = jnp.ones((x0.shape[0], 1))
    return [
        (
            loss(field, path, x0, energy, beta, key),
            loss(cfield, path, x0, energy, beta, key, cond=cond),
        )
        for key in keys
    ]


@register(
    "remark-4.6",
    "Remark 4.6: efm/ed (and qfm/qd) losses = CFM / denoising on pi by importance weights",
    EXACT_TOL,
)
def _remark_4_6(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    efm: Callable = efm_loss,
    ed: Callable = ed_loss,
) -> Outcome:
    """A batch holding each of six points K = 8 times: the library's ``efm_loss`` equals
    ``(1/B) sum_b pi(x0_b)/p(x0_b) ||f(x_t_b, t_b) - u_b||^2`` with the SAME draws as
    `cfm_loss` (common random numbers, recovered by autodiff and checked to lie on the
    path), with the exact ``pi/p = exp(-beta E) / Z``. As the batch holds every point equally
    often, the expectation of that sum over the draws is ``E_{x0 ~ pi} E_{t, eps}
    ||f - u||^2``: CFM on samples of pi. Same for ``ed_loss`` with the denoising loss;
    ``qfm_loss`` / ``qd_loss`` with ``Q = -E`` on one state equal ``efm_loss`` / ``ed_loss``."""
    data, beta = uniform_finite(2)
    k = 8
    x0 = _arr(np.tile(np.asarray(data.points), (k, 1)))
    energy = _arr(np.tile(np.asarray(data.energy), k))
    field, cfield = _random_mlps(20, dim=2), _random_mlps(21, dim=2, cond_dim=1)
    keys = [_arr(np.array([0, 30], dtype=np.uint32))]  # jr.PRNGKey(30), without compiling
    errors: dict[str, float] = {}
    for pname, path in _paths(only=only_paths):
        refs = _remark_4_6_refs(path, x0, energy, beta, keys, field, cfield)
        args = (path, x0, energy, beta, keys, field, cfield)
        e_out, d_out = _remark_4_6_loss(*args, efm), _remark_4_6_loss(*args, ed)
        lib = [
            {
                "efm_loss": e[0],
                "ed_loss": d[0],
                "qfm_loss = efm_loss(E=-Q)": e[1],
                "qd_loss = ed_loss(E=-Q)": d[1],
            }
            for e, d in zip(e_out, d_out, strict=True)
        ]
        for i, (ref, got) in enumerate(zip(refs, lib, strict=True)):
            for q, r in ref.items():
                # draws: (recovered, on the path); losses: library ingredient vs reference
                pair = r if q.startswith("draws") else (got[q], r)
                errors[f"{pname}/key{i}/{q}"] = _rel(*pair)
    return Outcome(errors)


# -- 5. Corollary 4.7 ------------------------------------------------------------------------


@_jit
def _score_refs(cases, path):
    """Test points, ``grad log q_t`` by autodiff of the closed form, and on the finite data
    set ``grad log p_t - grad E_t`` [3.6]."""

    def one(data, centres, z, t, beta):
        x = _x(path, centres, z, t)

        def refs(x, t):
            ref = jax.grad(log_marginal, argnums=2)(data, path, x, t, beta)
            out = {"ref": ref}
            if isinstance(data, FiniteData):
                gp = jax.grad(log_marginal, argnums=2)(data, path, x, t, 0.0)
                ge = jax.grad(intermediate_energy, argnums=2)(data, path, x, t, beta)
                out["eq3.6"] = gp - ge
            return out

        return x, jax.vmap(refs)(x, t)

    return {name: one(*case) for name, case in cases.items()}


@_jit
def _score_lib(cases, path, x, score):
    def one(data, t, beta, x):
        return jax.vmap(lambda y, s: score(data, path, y, s, beta))(x, t)

    return {name: one(data, t, beta, x[name]) for name, (data, _, _, t, beta) in cases.items()}


@register(
    "corollary-4.7",
    "Corollary 4.7: the weighted-posterior score (4.4) equals autodiff grad log q_t",
    EXACT_TOL,
    subject="paper maths",
)
def _corollary_4_7(
    *, tolerance: float, only_paths: Sequence[str] | None = None, score: Callable = guided_score
) -> Outcome:
    """Paper maths: eq. 4.4 (the reference `guided_score`: conditional scores ``-eps /
    sigma_t`` via `AbstractPath.score_from_eps`, averaged over the guided posterior) against
    ``jax.grad`` of the closed-form ``log q_t``, on the finite data set, the mixture and the
    Gaussian; on the finite data set also ``grad log q_t = grad log p_t - grad E_t`` [3.6],
    where both sides are references (`log_marginal`, `intermediate_energy`): two routes of
    the maths, no library function. The library learns this score with `ed_loss`, checked by
    ``corollary-4.8``."""
    cases = {}
    for dname, (data, beta) in (
        ("finite", finite_2d()),
        ("mixture", mixture_2d()),
        ("gaussian", gauss_2d()),
    ):
        cases[dname] = (data, *_points(4, data), beta)
    errors: dict[str, float] = {}
    for pname, path in _paths(only=only_paths):
        refs = _score_refs(cases, path)
        got = _score_lib(cases, path, {k: v[0] for k, v in refs.items()}, score)
        for dname, (_, ref) in refs.items():
            errors[f"{pname}/{dname}/eq4.4"] = _rel(got[dname], ref["ref"])
            if "eq3.6" in ref:
                errors[f"{pname}/{dname}/eq3.6"] = _rel(ref["eq3.6"], ref["ref"])
    return Outcome(errors)


# -- 7. Lemma 4.10 ---------------------------------------------------------------------------


class _Mix(eqx.Module):
    """The two exact fields CFG combines: ``cond = [0]`` unconditional, ``[1]`` conditional."""

    data: Data
    path: AbstractPath

    def __call__(self, x, t, cond):
        # p(x | c) ∝ p(x) exp(-E(x)): the guided velocity at beta = cond[0] is the
        # unconditional one at cond = [0] and the conditional one at [1]
        return guided_velocity(self.data, self.path, x, t, cond[0])


class _Uncond(eqx.Module):
    data: Data
    path: AbstractPath

    def __call__(self, x, t, cond=None):
        return guided_velocity(self.data, self.path, x, t, 0.0)


class _LogRatio(eqx.Module):
    """``log q^beta_t(x) - log p_t(x) = -E_t(x) + const``; at beta = 1 with ``E = -log p(c|x)``
    it is the noisy log-classifier ``log p_t(c | x) + const``."""

    data: Data
    path: AbstractPath
    beta: jax.Array

    def __call__(self, x, t, cond=None):
        return log_marginal(self.data, self.path, x, t, self.beta) - log_marginal(
            self.data, self.path, x, t, 0.0
        )


class _ScaledNet(eqx.Module):
    net: Callable[..., Any]
    scale: jax.Array

    def __call__(self, x, t, cond=None):
        return self.scale * self.net(x, t, cond)


def _exact_energy_net(data: Data, path: AbstractPath, beta: Any) -> Callable[..., Any]:
    """``-E^beta_t + const`` in closed form."""
    return _LogRatio(data, path, jnp.asarray(beta))


SCALES = (1.0, 2.0)

CFG_SCALE = 2.0


class _GuidanceField(eqx.Module):
    """Energy guidance (``cfg = 0``: `EnergyGuidedField` with ``energy_net(data, path, beta)``)
    or `CFGField` with scale ``CFG_SCALE`` (``cfg = 1``), selected by a traced flag so the
    sampler compiles once for every path, scale and both guidances. Both are computed (a
    `lax.cond` under the sampler's `vmap` costs seconds of tracing)."""

    data: GaussianMixture
    path: AbstractPath
    beta: jax.Array
    cfg: jax.Array
    energy_net: Callable[..., Any] = eqx.field(static=True)

    def __call__(self, x, t, cond=None):
        return _field_value(self._value, x, t)

    def _value(self, x, t):
        data, path = self.data, self.path

        def energy():
            net = self.energy_net(data, path, self.beta)
            return EnergyGuidedField(_Uncond(data, path), net, path, 1.0)(x, t, None)

        def cfg():
            return CFGField(_Mix(data, path), CFG_SCALE, jnp.zeros(1))(x, t, jnp.ones(1))

        return jnp.where(self.cfg, cfg(), energy())


def _batch(field: Callable[..., Any], x: jax.Array, t: jax.Array, cond: Any = None) -> jax.Array:
    return jax.vmap(lambda xi, ti: field(xi, ti, cond))(x, t)


@_jit
def _lemma_4_10_refs(data, path, centres, z, t):
    """Test points; CFG and classifier guidance and Theorem 4.1's ``u^w`` at every scale."""
    x = _x(path, centres, z, t)
    mix, uncond = _Mix(data, path), _Uncond(data, path)
    classifier = _LogRatio(data, path, jnp.asarray(1.0))

    def at_scale(w):  # w traced: one trace for every scale
        cfg = CFGField(mix, w, jnp.zeros(1))
        cg = EnergyGuidedField(uncond, classifier, path, w, "velocity")
        return {
            "CFG": _batch(cfg, x, t, jnp.ones(1)),
            "CG": _batch(cg, x, t),
            "Thm4.1": _batch(_VelocityField(data, path, w, guided_velocity), x, t),
        }

    return x, jax.vmap(at_scale)(jnp.asarray(SCALES))


@_jit
def _lemma_4_10_energy(data, path, x, t, energy_net):
    """Energy guidance with the ingredient ``energy_net`` at every scale."""

    def at_scale(w):
        net = energy_net(data, path, w)
        return _batch(EnergyGuidedField(_Uncond(data, path), net, path, 1.0, "velocity"), x, t)

    return jax.vmap(at_scale)(jnp.asarray(SCALES))


@register(
    "lemma-4.10",
    "Lemma 4.10: CFG(w) = CG(w) = energy guidance(beta) at w = beta = 1; for w != 1 only "
    "energy guidance samples p p(c|x)^w",
    EXACT_TOL,
    subject="paper maths",
)
def _lemma_4_10(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    energy_net: Callable = _exact_energy_net,
    sampler: bool = True,
) -> Outcome:
    """Paper maths: the guided fields are exact references (velocities, noisy classifier,
    ``-E_t``); the library's `CFGField` and `EnergyGuidedField` combine them and the library
    sampler integrates them. Gaussian data, ``p(c|x) ∝ exp(-1/2 (x-c)^T A (x-c))``, scales
    w = beta in {1, 2}.
    `CFGField` over the exact unconditional / conditional velocities; classifier guidance and
    energy guidance as `EnergyGuidedField` (exact noisy log-classifier, exact ``-E_t``).
    Pointwise: CFG = CG for every w, energy guidance = Theorem 4.1's ``u^beta``, CFG = energy
    guidance at 1. Pushforwards by the adaptive sampler: energy guidance gives
    ``N(m*_w, S*_w)`` for every w; passing also needs CFG at w = 2 to MISS it by > 1e-3 (the
    sizes of the differences are in ``info``). ``sampler=False`` skips the pushforwards."""
    data, _ = gauss_2d()
    centres, z, t = _points(5, data)
    errors: dict[str, float] = {}
    info: dict[str, float] = {}
    ok = True
    for pname, path in _paths(only=only_paths):
        x, refs = _lemma_4_10_refs(data, path, centres, z, t)
        energy = np.asarray(_lemma_4_10_energy(data, path, x, t, energy_net))
        for i, w in enumerate(SCALES):
            v = {k: np.asarray(a[i]) for k, a in refs.items()} | {"EG": energy[i]}
            errors[f"{pname}/w={w}/CFG = CG"] = _rel(v["CFG"], v["CG"])
            errors[f"{pname}/w={w}/EG = u^beta"] = _rel(v["EG"], v["Thm4.1"])
            if w == 1.0:
                errors[f"{pname}/w=1/CFG = EG"] = _rel(v["CFG"], v["EG"])
            else:
                info[f"{pname}/w={w}/max|CFG - EG|"] = _max(np.abs(v["CFG"] - v["EG"]))
            if not sampler:  # pointwise identities only (quicker)
                continue
            m_star, s_star = tilted_closed_form(GAUSS_MEAN, GAUSS_COV, GAUSS_A, GAUSS_C, w)
            start = _start(m_star, s_star, path)
            eg = _GuidanceField(data, path, _arr(w), _arr(False), energy_net)
            mean, cov = pushforward(eg, path, *start)
            errors[f"{pname}/w={w}/EG pushforward"] = max(_rel(mean, m_star), _rel(cov, s_star))
            if w == CFG_SCALE:
                cfg = _GuidanceField(data, path, _arr(w), _arr(True), energy_net)
                mean, cov = pushforward(cfg, path, *start)
                gap = max(_rel(mean, m_star), _rel(cov, s_star))
                info[f"{pname}/w={w}/CFG pushforward miss"] = gap
                ok = ok and gap > 1e-3
    return Outcome(errors, info, ok)


# -- 8. Lemma 4.11 ---------------------------------------------------------------------------


def _classifier_logp(points: Any) -> np.ndarray:
    """``log p(c | x0) = log sigmoid(a . x0 + b)`` on the data points."""
    s = np.asarray(points) @ np.array([1.5, -1.0]) + 0.3
    return -np.logaddexp(0.0, -s)


@_jit
def _lemma_4_11_case(data0, logp_c, w, path, centres, z, t):
    x = _x(path, centres, z, t)
    n = data0.points.shape[0]

    def pair(x, t):
        a, s = path.alpha(t), path.sigma(t)
        e = (x[None, :] - a * data0.points) / s
        tgt = jax.vmap(lambda x0, ei: path.sample(x0, ei, t).eps)(data0.points, e)
        log_w = jnp.log(w / n) - 0.5 * jnp.sum(e**2, axis=1)
        best = path.score_from_eps(jax.nn.softmax(log_w) @ tgt, t)

        def log_pc(y):
            post = jax.nn.log_softmax(posterior_logits(data0, path, y, t, 0.0))
            return jax.nn.logsumexp(post + logp_c)

        ref = jax.grad(log_marginal, argnums=2)(data0, path, x, t, 0.0) + jax.grad(log_pc)(x)
        return best, ref

    return jax.vmap(pair)(x, t)


def _neg(logp: Any) -> Any:
    return -logp


@register(
    "lemma-4.11",
    "Lemma 4.11: beta = 1, E = -log p(c|x): argmin L_CED = grad log p_t(x_t | c)",
    EXACT_TOL,
)
def _lemma_4_11(
    *,
    tolerance: float,
    only_paths: Sequence[str] | None = None,
    energy: Callable = _neg,
    weights: Callable = energy_weights,
) -> Outcome:
    """Finite data set (six equally likely points), classifier ``p(c|x0) = sigmoid(.)``. The
    pointwise minimiser of the L_CED integrand (library weights at beta = 1 of
    ``E = energy(log p(c|x0))``, library noise targets, `AbstractPath.score_from_eps`)
    against Bayes' rule by autodiff: ``grad log p_t(x) + grad log p_t(c | x)`` with
    ``p_t(c | x) = sum_i p(x0_i | x) p(c | x0_i)``."""
    data0, _ = uniform_finite(2)
    logp_c = _classifier_logp(data0.points)
    w = _jitted(weights)(_arr(energy(logp_c)), _arr(1.0))
    centres, z, t = _points(6, data0)
    errors: dict[str, float] = {}
    for pname, path in _paths(only=only_paths):
        best, ref = _lemma_4_11_case(data0, logp_c, w, path, centres, z, t)
        errors[pname] = _rel(best, ref)
    return Outcome(errors)


# -- 9. Energy-weight numerics ---------------------------------------------------------------


def _decimal_weights(energy: np.ndarray, beta: float) -> np.ndarray:
    """``B softmax(-beta E)`` in 60-digit decimal arithmetic (forming ``exp(-beta E)``)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        b = decimal.Decimal(repr(float(beta)))
        e = [(-b * decimal.Decimal(repr(float(v)))).exp() for v in energy]
        total = sum(e)
        return np.array([float(len(e) * v / total) for v in e])


@register(
    "energy-weights",
    "Energy weights B softmax(-beta E): finite and exact for beta E up to 1e4",
    1e-12,
)
def _energy_weights(
    *,
    tolerance: float,
    weights: Callable = energy_weights,
    grouped: Callable = grouped_energy_weights,
) -> Outcome:
    """Against 60-digit decimal arithmetic, error relative to ``B``: beta E spread over
    [0, 1e4]; beta = 1e3 with E in [0, 10]; energies near 1e4 (shift invariance); beta = 0
    (all ones); one dominant sample; negative energies down to -1e4; row-wise grouped
    weights. Tolerance 1e-12: float64 rounding of ``beta E`` ~ 1e4 costs ~1e-12 relative."""
    rng = np.random.default_rng(0)
    n = 64  # one batch size: one compilation
    dominant = np.concatenate([[0.0], 40.0 + rng.uniform(0, 1e4, n - 1)])
    cases = {
        "beta E in [0, 1e4]": (np.linspace(0.0, 1e4, n), 1.0),
        "beta = 1e3": (rng.uniform(0, 10, n), 1e3),
        "E ~ 1e4 (shift)": (1e4 + rng.uniform(0, 1, n), 7.0),
        "beta = 0": (rng.uniform(-5e3, 5e3, n), 0.0),
        "one dominant": (dominant, 1.0),
        "E down to -1e4": (-rng.uniform(0, 1e4, n), 1.0),
    }
    jw = jax.jit(weights)  # XLA's default options: this check is about float64 rounding
    errors: dict[str, float] = {}
    for name, (e, beta) in cases.items():
        got = np.asarray(jw(_arr(e), _arr(beta)))
        errors[name] = _rel(got / n, _decimal_weights(e, beta) / n)
    rows = np.stack([np.linspace(0, 1e4, 8), rng.uniform(0, 30, 8), 1e4 + rng.uniform(0, 2, 8)])
    got = np.asarray(jax.jit(grouped)(_arr(rows), _arr(3.0)))
    ref = np.stack([_decimal_weights(r, 3.0) for r in rows])
    errors["grouped rows"] = _rel(got / rows.shape[1], ref / rows.shape[1])
    return Outcome(errors)
