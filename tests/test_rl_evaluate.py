"""Evaluation extras of a trained run: best-of-N extraction by the critic, the deterministic
sample (x1 = 0), the behaviour model scored on its own, and their record in
``evaluations.jsonl``."""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import TINY_RL

import ewfm
from ewfm.rl import Policy, resolve_config


class _Target(eqx.Module):
    """A Q network with a known maximiser: ``min(s, a) = -||a - c||^2``."""

    c: jax.Array

    def min(self, s, a):
        del s
        return -jnp.sum((a - self.c) ** 2)


def _policy(**kw):
    keys = jr.split(jr.key(0), 2)  # two seeds, stacked as a run's networks are
    field = eqx.filter_vmap(lambda k: ewfm.MLPField(3, cond_dim=4, width=16, depth=2, key=k))(keys)
    sampler = ewfm.Sampler(ewfm.OTPath(), "midpoint", 3, "velocity", 1.0)
    c = jnp.array([[0.5, -0.5, 0.0], [-0.2, 0.1, 0.3]])
    return Policy(field, None, sampler, jnp.zeros(4), jnp.ones(4), 3, 0.0, **kw), c


def _one_seed(policy, j):
    return jax.tree_util.tree_map(lambda x: x[j], eqx.filter(policy.field, eqx.is_array))


def test_deterministic_integrates_from_zero_noise():
    pol, _ = _policy(deterministic=True)
    obs = jr.normal(jr.key(1), (2 * 5, 4))
    got = pol(obs, jr.key(2))
    for j in range(2):
        field = eqx.combine(_one_seed(pol, j), eqx.filter(pol.field, eqx.is_array, inverse=True))
        ref = pol.sampler.integrate(field, jnp.zeros((5, 3)), obs[5 * j : 5 * j + 5])
        # the policy vmaps over seeds: float32 kernels may round differently (measured 1.5e-8)
        np.testing.assert_allclose(got[5 * j : 5 * j + 5], ref, rtol=1e-6, atol=1e-7)
    # no noise: the key does not matter
    np.testing.assert_array_equal(pol(obs, jr.key(3)), got)


def test_best_of_n_acts_with_the_highest_q_of_its_draws():
    n_best, n = 6, 4
    plain, c = _policy()
    pol = Policy(*[getattr(plain, f) for f in ("field", "energy_net", "sampler", "mean", "std",
                 "act_dim", "guidance")], q_net=_Target(c), best_of=n_best)  # fmt: skip
    obs = jr.normal(jr.key(1), (2 * n, 4))
    key = jr.key(5)
    got = np.asarray(pol(obs, key))
    for j, kj in enumerate(jr.split(key, 2)):
        field = eqx.combine(_one_seed(pol, j), eqx.filter(pol.field, eqx.is_array, inverse=True))
        states = jnp.repeat(obs[n * j : n * j + n], n_best, axis=0)
        draws = np.asarray(pol.sampler(field, kj, (n * n_best, 3), states)).reshape(n, n_best, 3)
        dist = ((draws - np.asarray(c[j])) ** 2).sum(-1)
        want = draws[np.arange(n), dist.argmin(1)]
        np.testing.assert_allclose(got[n * j : n * j + n], want, rtol=1e-6, atol=1e-7)
        # and it is not simply the first draw: the choice moved the actions toward c
        assert dist.min(1).mean() < dist[:, 0].mean()


def test_extraction_refusals():
    _, c = _policy()
    with pytest.raises(ValueError, match="best_of must be >= 1"):
        _policy(best_of=0)
    with pytest.raises(ValueError, match="pass the run's q_net"):
        _policy(best_of=4)
    with pytest.raises(ValueError, match="drop deterministic"):
        _policy(best_of=4, q_net=_Target(c), deterministic=True)


TINY = TINY_RL


def test_evaluate_extras_on_a_run(tiny_dataset, tmp_path):
    """``evaluate_run`` / ``ewfm evaluate`` score the behaviour model, best-of-N and the
    deterministic sample; every evaluation is appended to evaluations.jsonl, refusals none."""
    from ewfm_cli.main import app
    from typer.testing import CliRunner

    from ewfm.rl import evaluate, evaluate_run, load_run, train

    cfg = resolve_config("quick", overrides=dict(TINY, dataset=tiny_dataset, seeds=2))
    train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    run = tmp_path / "r"
    assert not (run / "evaluations.jsonl").exists()  # training itself records none

    # the behaviour model: the run's behaviour EMA sampled plainly, on the same seeds
    bc = evaluate_run(run, episodes=1, model="behaviour", seed=7)
    r = load_run(run)
    plain = Policy(r.behaviour(), None, r.sampler, r.mean, r.std, 3, 0.0)
    ref = evaluate(plain, "Hopper-v5", 2, 7, key=jr.key(7), max_episode_steps=10)
    assert bc["scores"] == [float(x) for x in ref.normalized]

    best = evaluate_run(run, episodes=1, best_of=4)
    det = evaluate_run(run, episodes=1, deterministic=True)
    bc_best = evaluate_run(run, episodes=1, model="behaviour", best_of=4)
    for ev in (best, det, bc_best):
        assert ev["episodes"] == 2 and all(math.isfinite(x) for x in ev["scores"])
    assert (best["extract"], det["extract"], bc_best["model"]) == (
        "best-of-4",
        "deterministic",
        "behaviour",
    )
    records = [json.loads(x) for x in (run / "evaluations.jsonl").read_text().splitlines()]
    assert [(r["model"], r["extract"]) for r in records] == [
        ("behaviour", "sample"), ("policy", "best-of-4"), ("policy", "deterministic"),
        ("behaviour", "best-of-4"),
    ]  # fmt: skip
    assert records[1]["scores"] == best["scores"]

    res = CliRunner().invoke(app, ["evaluate", str(run), "--episodes", "1", "--best-of", "4"])
    assert res.exit_code == 0 and "(best-of-4)" in res.output, res.output
    assert f"normalised score {best['score_mean']:.1f}" in res.output  # same seed, same draws
    for args, msg in [
        (["--best-of", "4", "--deterministic"], "drop --deterministic or --best-of"),
        (["--best-of", "0"], "best_of must be >= 1"),
        (["--model", "critic"], "unknown model 'critic'; choose one of policy, behaviour"),
        (["--model", "behaviour", "--checkpoint", "eval_qipo_0001.eqx"], "drop it with --model"),
    ]:
        res = CliRunner().invoke(app, ["evaluate", str(run), *args])
        assert res.exit_code == 2 and msg in " ".join(res.output.split()), (args, res.output)
    assert len((run / "evaluations.jsonl").read_text().splitlines()) == 5  # refusals add none
