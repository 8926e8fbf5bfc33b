"""Samplers against the exact flow of Gaussian data (closed-form velocity, score and noise)."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import gaussian_fields

import ewfm

M, S = jnp.array([1.0, -2.0]), jnp.array([0.5, 1.5])


@pytest.fixture(autouse=True)
def _x64(x64):
    yield


def x1(n=64):
    return jr.normal(jr.PRNGKey(0), (n, 2), jnp.float64)


@pytest.mark.parametrize("path", [ewfm.OTPath(), ewfm.VPPath()], ids=repr)
def test_adaptive_solver_matches_exact_pushforward(path):
    velocity, _, _, push = gaussian_fields(path, M, S)
    t_end = path.t_min
    res = ewfm.integrate(velocity, path, x1(), solver="tsit5", rtol=1e-8, atol=1e-8)
    exact = push(x1(), 1.0, t_end)
    assert float(jnp.max(jnp.abs(res.x - exact))) < 1e-5
    assert int(res.nfe) > 6


def _errors(path, field, solver, steps_list, prediction: Any = "velocity", t_start=1.0):
    push = gaussian_fields(path, M, S)[3]
    exact = push(x1(), t_start, path.t_min)
    out = []
    for n in steps_list:
        res = ewfm.integrate(
            field, path, x1(), solver=solver, steps=n, prediction=prediction, t_start=t_start
        )
        out.append(float(jnp.max(jnp.abs(res.x - exact))))
    return np.array(out)


def _order(errors):
    return np.log2(errors[:-1] / errors[1:])


def mixture_velocity(path):
    """Velocity of a two-component Gaussian mixture: a nonlinear ODE, no special structure."""
    ms, ss, ws = jnp.array([-1.0, 1.5]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6])

    def velocity(x, t, cond=None):
        # responsibility-weighted velocities of the components' own Gaussian flows
        a, da, sg, dsg = path.alpha(t), path.d_alpha(t), path.sigma(t), path.d_sigma(t)
        var = a**2 * ss**2 + sg**2
        d = x[:, None] - a * ms
        r = jax.nn.softmax(jnp.log(ws) - 0.5 * d**2 / var - 0.5 * jnp.log(var), axis=-1)
        comp = da * ms + (a * da * ss**2 + sg * dsg) / var * d
        return jnp.sum(r * comp, axis=-1)

    return velocity


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_fixed_step_convergence_order(solver, order):
    # reference: the adaptive solver at tolerance 1e-12 (independent of the fixed-step code)
    path = ewfm.OTPath()
    v = mixture_velocity(path)
    ref = ewfm.integrate(v, path, x1(), solver="tsit5", rtol=1e-12, atol=1e-12, t_end=0.05).x
    errs = []
    for n in [16, 32, 64, 128]:
        res = ewfm.integrate(v, path, x1(), solver=solver, steps=n, t_end=0.05)
        errs.append(float(jnp.max(jnp.abs(res.x - ref))))
    measured = _order(np.array(errs))
    assert np.all(np.abs(measured[1:] - order) < 0.2), measured


def test_dpm_solver_2_on_vp_with_noise_prediction():
    path = ewfm.VPPath()
    eps = gaussian_fields(path, M, S)[2]
    errs = _errors(path, eps, "dpm2", [15, 30, 60], prediction="eps")
    # 15 steps (QGPO's setting) on a log-SNR grid: max error 0.089 over 64 samples of data with
    # scales up to 1.5 (measured; mean 0.019); a time-uniform grid gives 0.20. Then 2nd order.
    assert errs[0] < 0.1, errs
    assert np.all(_order(errs) > 1.7), _order(errs)


@pytest.mark.parametrize("prediction", ["velocity", "eps", "score"])
def test_prediction_types_are_equivalent(prediction):
    path = ewfm.VPPath()
    fields = dict(zip(["velocity", "score", "eps"], gaussian_fields(path, M, S)[:3], strict=True))
    ref = ewfm.integrate(fields["velocity"], path, x1(8), solver="heun", steps=20)
    got = ewfm.integrate(
        fields[prediction], path, x1(8), solver="heun", steps=20, prediction=prediction
    )
    assert jnp.allclose(got.x, ref.x, atol=1e-10)


def test_nfe_counts_match_actual_evaluations():
    path = ewfm.OTPath()
    velocity = gaussian_fields(path, M, S)[0]
    calls = []

    def counted(x, t, cond):
        jax.debug.callback(lambda: calls.append(1))
        return velocity(x, t)

    solvers: list[tuple[Any, int]] = [("tsit5", 10), ("heun", 7), ("euler", 5), ("dpm2", 6)]
    for solver, steps in solvers:
        calls.clear()
        t_start = 0.999 if solver == "dpm2" else 1.0
        res = ewfm.integrate(
            counted, path, x1(1), solver=solver, steps=steps, rtol=1e-6, atol=1e-6, t_start=t_start
        )
        jax.effects_barrier()
        assert int(res.nfe) == len(calls), (solver, int(res.nfe), len(calls))


def test_sample_draws_standard_normal_noise():
    path = ewfm.OTPath()
    ident = lambda x, t, c: jnp.zeros_like(x)  # zero velocity: samples are the noise itself
    res = ewfm.sample(ident, path, jr.PRNGKey(4), (20_000, 2), solver="euler", steps=1)
    assert abs(float(res.x.mean())) < 0.03 and abs(float(res.x.std()) - 1.0) < 0.03


def test_cfg_field_combination_and_energy_guidance():
    path = ewfm.OTPath()
    base = lambda x, t, c: x * 0 + (0.0 if c is None else c)
    cfg = ewfm.CFGField(base, scale=3.0)
    c = jnp.array([1.0, 2.0])
    assert jnp.allclose(cfg(jnp.zeros(2), 0.5, c), 3.0 * c)  # (1-w) * 0 + w * c
    # energy guidance adds w grad f to the score: with f = g.x, score shifts by w g
    g, w, x, t = jnp.array([0.5, -1.0]), 2.0, jnp.array([0.3, 0.1]), 0.4
    score_field = lambda x, t, c: -x
    guided = ewfm.EnergyGuidedField(score_field, lambda y, t, c: g @ y, path, w, "score")
    assert jnp.allclose(guided(x, t), -x + w * g)
    vel = lambda y, t, c: path.velocity_from_score(-y, y, t)
    guided_v = ewfm.EnergyGuidedField(vel, lambda y, t, c: g @ y, path, w, "velocity")
    assert jnp.allclose(guided_v(x, t), path.velocity_from_score(-x + w * g, x, t))
    eps = lambda y, t, c: path.eps_from_score(-y, t)
    guided_e = ewfm.EnergyGuidedField(eps, lambda y, t, c: g @ y, path, w, "eps")
    assert jnp.allclose(guided_e(x, t), path.eps_from_score(-x + w * g, t))


def test_energy_guidance_samples_a_linearly_tilted_gaussian():
    # p = N(M, S^2), E(x) = g.x  =>  pi = N(M - beta S^2 g, S^2); with a linear energy the
    # intermediate energy is linear too: E_t(x) = beta g.(E[x0|x]) + const, so
    # grad(-E_t) = -beta g alpha S^2 / sd_t^2 is exact and gradient guidance is exact.
    path = ewfm.OTPath()
    g, beta = jnp.array([1.0, -0.5]), 0.8
    score = gaussian_fields(path, M, S)[1]

    def neg_energy_t(x, t, c):
        sd2 = path.alpha(t) ** 2 * S**2 + path.sigma(t) ** 2
        return -beta * jnp.sum(g * path.alpha(t) * S**2 / sd2 * x)

    guided = ewfm.EnergyGuidedField(score, neg_energy_t, path, 1.0, "score")
    res = ewfm.integrate(
        guided,
        path,
        x1(),
        prediction="score",
        solver="tsit5",
        t_start=0.999,
        t_end=1e-4,
        rtol=1e-8,
        atol=1e-8,
    )
    shifted = gaussian_fields(path, M - beta * S**2 * g, S)[3]
    assert float(jnp.max(jnp.abs(res.x - shifted(x1(), 0.999, 1e-4)))) < 1e-4


def test_bad_solver_arguments():
    f = lambda x, t, c: x
    # a ValueError listing the solvers; with run-time type checking on, the Literal fails first
    with pytest.raises((ValueError, TypeError), match="solver"):
        ewfm.integrate(f, ewfm.OTPath(), x1(2), solver="rk4")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="steps"):
        ewfm.integrate(f, ewfm.OTPath(), x1(2), solver="heun", steps=0)
    # dpm2 steps in log-SNR, which is -inf at t = 1 on the OT path (alpha_1 = 0): refused with
    # the fix, through integrate, sample and Sampler alike (from t_start < 1 it runs: above)
    dpm2_on_ot = r"dpm2 / log-SNR grids need alpha\(t_start\) > 0; pass t_start < 1 for OTPath\."
    with pytest.raises(ValueError, match=dpm2_on_ot):
        ewfm.integrate(f, ewfm.OTPath(), x1(2), solver="dpm2")
    with pytest.raises(ValueError, match=dpm2_on_ot):
        ewfm.sample(f, ewfm.OTPath(), jax.random.key(0), (3, 2), solver="dpm2")
    with pytest.raises(ValueError, match=dpm2_on_ot):
        ewfm.Sampler(ewfm.OTPath(), "dpm2", 4)(f, jax.random.key(0), (3, 2))


def test_path_with_traced_schedule_under_jit():
    # the path is a jax.jit argument, so its schedule is traced: one compiled sampler serves
    # many schedules (adaptive and fixed-step solvers need no concrete alpha(t_start))
    velocity = gaussian_fields(ewfm.VPPath(), M, S)[0]

    @jax.jit
    def run(path):
        return ewfm.integrate(velocity, path, x1(8), solver="heun", steps=8, t_end=0.01).x

    traced = run(ewfm.VPPath())
    ref = ewfm.integrate(velocity, ewfm.VPPath(), x1(8), solver="heun", steps=8, t_end=0.01).x
    assert float(jnp.max(jnp.abs(traced - ref))) < 1e-12
