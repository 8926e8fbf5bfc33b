"""Sampling: integrate the probability-flow ODE ``dx/dt = v_t(x)`` from ``t = 1`` to data.

One function, `sample`, built on diffrax: adaptive Tsit5 with a PID step-size controller,
fixed-step Euler, Heun and midpoint (the paper's RK2 for QIPO-OT), and the second-order
multistep DPM-Solver (Lu et al. 2022) used by QGPO on VP paths. Guided baselines are
*fields* that wrap other fields (`CFGField`, `EnergyGuidedField`), so every solver serves
them too. docs/method.md gives the DPM-Solver step (section 11) and the guidance formulas
(section 8, Lemma 4.10).
"""

from collections.abc import Callable
from typing import Any, ClassVar, Literal, final

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._losses import Field, apply_field
from ._paths import AbstractPath

Solver = Literal["euler", "heun", "midpoint", "tsit5", "dpm2"]
Prediction = Literal["velocity", "eps", "score"]
SOLVERS: tuple[str, ...] = ("euler", "heun", "midpoint", "tsit5", "dpm2")
PREDICTIONS: tuple[str, ...] = ("velocity", "eps", "score")
_EVALS_PER_STEP = {"euler": 1, "heun": 2, "midpoint": 2, "dpm2": 1}


class SampleResult(eqx.Module):
    """Samples at ``t_end`` and the number of field evaluations the solver used."""

    x: Float[Array, "*shape"]
    nfe: Int[Array, ""]


def to_velocity(
    path: AbstractPath, out: Array, x: Array, t: Float[ArrayLike, ""], prediction: str
) -> Array:
    """Convert a field output of type ``prediction`` to a velocity (Lemma 3.2, docs/method.md)."""
    if prediction == "velocity":
        return out
    if prediction == "eps":
        return path.velocity_from_eps(out, x, t)
    return path.velocity_from_score(out, x, t)


def to_eps(
    path: AbstractPath, out: Array, x: Array, t: Float[ArrayLike, ""], prediction: str
) -> Array:
    """Convert a field output of type ``prediction`` to a noise prediction."""
    if prediction == "eps":
        return out
    if prediction == "velocity":
        return path.eps_from_velocity(out, x, t)
    return path.eps_from_score(out, t)


class _DPMSolver2M(diffrax.AbstractSolver):
    """Second-order multistep DPM-Solver in noise-prediction form, as a diffrax solver.

    The term's vector field returns ``eps``; time ``s`` runs forward with ``t = t_start - s``.
    The first step is first order (DDIM); each later step reuses the previous evaluation, so
    a step costs one field evaluation.
    """

    path: AbstractPath
    t_start: float
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return (jnp.zeros_like(y0), jnp.zeros((), y0.dtype), jnp.array(False))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        prev_eps, prev_lam, has_prev = solver_state
        ta, tb = self.t_start - t0, self.t_start - t1
        lam_a, lam_b = self.path.log_snr(ta), self.path.log_snr(tb)
        h = lam_b - lam_a
        eps = terms.vf(t0, y0, args)
        r = jnp.where(has_prev, (lam_a - prev_lam) / h, 1.0)
        d1 = jnp.where(has_prev, (eps - prev_eps) / r, 0.0)
        sig_b = self.path.sigma(tb)
        y1 = (self.path.alpha(tb) / self.path.alpha(ta)) * y0 - sig_b * jnp.expm1(h) * (
            eps + 0.5 * d1
        )
        state = (eps, lam_a.astype(y0.dtype), jnp.array(True))
        return y1, None, dict(y0=y0, y1=y1), state, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def _grid(
    path: AbstractPath, t_start: float, t_end: float, steps: int, grid: str
) -> Float[Array, " n"]:
    if grid == "time":
        ts = jnp.linspace(t_start, t_end, steps + 1)
    else:
        lam = jnp.linspace(path.log_snr(t_start), path.log_snr(t_end), steps + 1)
        ts = path.t_of_log_snr(lam).at[0].set(t_start).at[-1].set(t_end)
    return t_start - ts  # the solver's forward time s


def _check_integrate(
    path: AbstractPath,
    solver: str,
    prediction: str,
    steps: int,
    t_start: float,
    t_end: float | None,
    grid: str | None,
) -> tuple[float, str]:
    """Refuse impossible `integrate` settings (one line each); the resolved t_end and grid."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}.")
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}."
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    t_end = path.t_min if t_end is None else t_end
    if not t_end < t_start:
        raise ValueError(f"need t_end < t_start, got t_end={t_end}, t_start={t_start}.")
    grid = grid or ("logsnr" if solver == "dpm2" else "time")
    if solver == "dpm2" or grid == "logsnr":  # only these need it: a path whose schedule
        # is traced (a jit argument) stays usable with the other solvers
        with jax.ensure_compile_time_eval():  # concrete even when called under jit
            alpha_start = float(path.alpha(t_start))
        if not alpha_start > 0:
            raise ValueError(
                "dpm2 / log-SNR grids need alpha(t_start) > 0; "
                f"pass t_start < 1 for {type(path).__name__}."
            )
    return t_end, grid


def integrate(
    field: Field,
    path: AbstractPath,
    x1: Float[Array, "batch ..."],
    cond: Float[Array, "batch cond"] | None = None,
    *,
    solver: Solver = "tsit5",
    steps: int = 10,
    prediction: Prediction = "velocity",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_start: float = 1.0,
    t_end: float | None = None,
    grid: Literal["time", "logsnr"] | None = None,
    max_steps: int = 4096,
) -> SampleResult:
    """Integrate the probability-flow ODE from ``x1`` at ``t_start`` down to ``t_end``.

    The deterministic core of `sample` (which draws ``x1 ~ N(0, I)``). ``t_end`` defaults to
    ``path.t_min``. ``grid`` places fixed steps uniformly in time (default) or in
    log-SNR (default for ``dpm2``). Returns the samples and the field-evaluation count.
    """
    t_end, grid_kind = _check_integrate(path, solver, prediction, steps, t_start, t_end, grid)

    def field_out(s, x):
        t = t_start - s
        tb = jnp.full(x.shape[:1], t, dtype=x.dtype)
        return t, apply_field(field, x, tb, cond)

    def velocity_vf(s, x, args):
        t, out = field_out(s, x)
        return -to_velocity(path, out, x, t, prediction)  # ds = -dt

    def eps_vf(s, x, args):
        t, out = field_out(s, x)
        return to_eps(path, out, x, t, prediction)

    span = t_start - t_end
    if solver == "tsit5":
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(velocity_vf),
            diffrax.Tsit5(),
            0.0,
            span,
            span / 8,
            x1,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
        )
        # FSAL: one evaluation at the start, six per attempted step.
        nfe = 1 + 6 * jnp.asarray(sol.stats["num_steps"])
    else:
        term_vf: Callable[..., Any] = eps_vf if solver == "dpm2" else velocity_vf
        dsolver: diffrax.AbstractSolver = {
            "euler": diffrax.Euler(),
            "heun": diffrax.Heun(),
            "midpoint": diffrax.Midpoint(),
            "dpm2": _DPMSolver2M(path, t_start),
        }[solver]
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(term_vf),
            dsolver,
            0.0,
            span,
            None,
            x1,
            stepsize_controller=diffrax.StepTo(ts=_grid(path, t_start, t_end, steps, grid_kind)),
            max_steps=steps,
        )
        nfe = jnp.asarray(_EVALS_PER_STEP[solver] * steps)
    assert sol.ys is not None
    return SampleResult(x=sol.ys[-1], nfe=nfe)


def sample(
    field: Field,
    path: AbstractPath,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    cond: Float[Array, "batch cond"] | None = None,
    **kwargs: Any,
) -> SampleResult:
    """Draw ``x1 ~ N(0, I)`` of ``shape`` (batch first) and integrate it to data.

    ``kwargs`` go to `integrate`: ``solver`` (``tsit5`` adaptive, ``euler``, ``heun``,
    ``midpoint``, ``dpm2``), ``steps``, ``prediction`` (what the field outputs), ``rtol``,
    ``atol``, ``t_end``, ``grid``.
    """
    x1 = jr.normal(key, shape)
    return integrate(field, path, x1, cond, **kwargs)


@final
class Sampler(eqx.Module):
    """How to draw from a field: its path, the solver, the step count and what it predicts.

    The one "field plus how to sample it" record of every wing (toy models, image runs, RL
    policies). ``clip`` bounds the samples (an action box); ``None`` leaves them as they are.
    ``sampler(field, key, shape, cond)`` draws ``x1 ~ N(0, I)`` of ``shape`` and integrates
    it to data, exactly as `sample` does with the same settings.
    """

    path: AbstractPath
    solver: str = eqx.field(static=True, default="midpoint")
    steps: int = eqx.field(static=True, default=10)
    prediction: str = eqx.field(static=True, default="velocity")
    clip: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}.")
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"unknown prediction {self.prediction!r}; choose one of {', '.join(PREDICTIONS)}."
            )
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")

    @property
    def nfe(self) -> int:
        """Field evaluations per sample (fixed-step solvers; tsit5 adapts, reported as -1)."""
        return self.steps * _EVALS_PER_STEP.get(self.solver, -1)

    def __call__(
        self,
        field: Field,
        key: PRNGKeyArray,
        shape: tuple[int, ...],
        cond: Float[Array, "batch cond"] | None = None,
    ) -> Float[Array, "*shape"]:
        """Samples of ``shape`` (batch first) from ``field``, conditioned row-wise on ``cond``."""
        return self.integrate(field, jr.normal(key, shape), cond)

    def integrate(
        self,
        field: Field,
        x1: Float[Array, "batch ..."],
        cond: Float[Array, "batch cond"] | None = None,
    ) -> Float[Array, "batch ..."]:
        """The deterministic map from noise ``x1`` to samples (see `integrate`)."""
        x = integrate(
            field,
            self.path,
            x1,
            cond,
            solver=self.solver,  # pyright: ignore[reportArgumentType]
            steps=self.steps,
            prediction=self.prediction,  # pyright: ignore[reportArgumentType]
        ).x
        return x if self.clip is None else jnp.clip(x, -self.clip, self.clip)


class CFGField(eqx.Module):
    """Classifier-free guidance: ``(1 - w) f(x, t, null) + w f(x, t, cond)``.

    Works for velocity, noise and score fields alike (each is affine in the score).
    ``null_cond`` is what the field was trained to read as "no condition". ``scale`` may be a
    JAX scalar: it is then traced, so a new scale does not recompile a jitted sampler.
    """

    field: Field
    scale: Float[ArrayLike, ""]
    null_cond: Array | None = None

    def __call__(
        self, x: Float[Array, " dim"], t: Float[ArrayLike, ""], cond: Array | None = None
    ) -> Float[Array, " dim"]:
        c = self.field(x, t, cond)
        u = self.field(x, t, self.null_cond)
        return u + self.scale * (c - u)


class EnergyGuidedField(eqx.Module):
    """Gradient guidance (QGPO/CEP, classifier guidance): ``score + w grad_x f(x_t, t, cond)``.

    ``energy_net`` is ``f ≈ -E_t`` (a log-classifier for classifier guidance); the gradient
    costs one backward pass per evaluation -- the overhead that EFM removes. The result is
    returned in the wrapped field's own parametrisation ``prediction``. ``scale`` may be a JAX
    scalar (traced, no recompile per scale).
    """

    field: Field
    energy_net: Callable[..., Any]
    path: AbstractPath
    scale: Float[ArrayLike, ""]
    prediction: str = eqx.field(static=True, default="velocity")

    def __call__(
        self, x: Float[Array, " dim"], t: Float[ArrayLike, ""], cond: Array | None = None
    ) -> Float[Array, " dim"]:
        out = self.field(x, t, cond)
        g = self.scale * jax.grad(lambda y: self.energy_net(y, t, cond))(x)
        if self.prediction == "score":
            return out + g
        if self.prediction == "eps":
            return out + self.path.eps_from_score(g, t)
        return out + self.path.velocity_from_score(g, jnp.zeros_like(x), t)
