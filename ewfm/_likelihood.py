"""Exact log-likelihood of a flow by the instantaneous change of variables.

Along a trajectory of ``dx/dt = v_t(x)``, ``d/dt log p_t(x_t) = -div v_t(x_t)``, so integrating
from data time to ``t = 1``:

    log p_0(x_0) = log N(x_1; 0, I) + ∫_0^1 div v_t(x_t) dt.

The divergence is the exact trace of the Jacobian (``jax.jacfwd``: one forward pass per
dimension), which is cheap and noise-free in low dimension (the 2D toys); the ODE is solved
with diffrax (adaptive Tsit5). The prior at ``t = 1`` is ``N(0, I)``, the same one `sample`
draws from. docs/method.md, section 11, states the formula.
"""

import math

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._losses import Field
from ._paths import AbstractPath
from ._sample import PREDICTIONS, Prediction, to_velocity


def log_likelihood(
    field: Field,
    path: AbstractPath,
    x: Float[Array, "batch dim"],
    cond: Float[Array, "batch cond"] | None = None,
    *,
    prediction: Prediction = "velocity",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_start: float | None = None,
    t_end: float = 1.0,
    max_steps: int = 4096,
) -> Float[Array, " batch"]:
    """Log-density (nats) of each row of ``x`` under the model of the probability-flow ODE.

    ``field`` is a one-sample field of type ``prediction`` (converted to a velocity with
    Lemma 3.2), so flow-matching, noise and score models -- guided wrappers included -- all
    work. ``x`` is taken to live at ``t_start`` (default ``path.t_min``: for a VP path that is
    the density of the slightly noised data there); the ODE runs forward to ``t_end`` where
    the density is ``N(0, I)``. Cost: ``dim`` Jacobian-vector products per evaluation.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"unknown prediction {prediction!r}; choose one of {', '.join(PREDICTIONS)}."
        )
    t0 = path.t_min if t_start is None else t_start
    if not t0 < t_end:
        raise ValueError(f"need t_start < t_end, got t_start={t0}, t_end={t_end}.")
    dim = x.shape[-1]

    def velocity_and_div(xi, t, ci):
        def vel(y):
            out = to_velocity(path, field(y, t, ci), y, t, prediction)
            return out, out

        jac, v = jax.jacfwd(vel, has_aux=True)(xi)
        return v, jnp.trace(jac)

    def vf(t, y, args):
        xs, _ = y
        if cond is None:
            return jax.vmap(lambda xi: velocity_and_div(xi, t, None))(xs)
        return jax.vmap(lambda xi, ci: velocity_and_div(xi, t, ci))(xs, cond)

    y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        diffrax.Tsit5(),
        t0,
        t_end,
        (t_end - t0) / 8,
        y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    assert sol.ys is not None
    x1, int_div = sol.ys[0][-1], sol.ys[1][-1]
    log_prior = -0.5 * jnp.sum(x1**2, axis=-1) - 0.5 * dim * math.log(2 * math.pi)
    return log_prior + int_div
