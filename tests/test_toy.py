"""ewfm.toy: exact targets, the distance metric, guidance that measurably works for every
method, the settings and run-directory checks, CLI errors, and samples unchanged since the
legacy fixture (tests/data/legacy)."""

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from ewfm_cli.main import app
from helpers import LEGACY, legacy_close
from typer.testing import CliRunner

import ewfm
import ewfm.toy as toy

# One small configuration shared by the training tests (and the CLI run), so every compiled
# epoch, sampler and likelihood is built once per test process.
QUICK = toy.resolve_config("quick")


def test_exact_reweighting_equals_closed_form(x64):
    # Points k = 0..K-1 with energy E_k = k and uniform p: pi_k is a truncated geometric law.
    K, beta = 12, 0.7
    x = jnp.stack([jnp.arange(K, dtype=float), jnp.zeros(K)], axis=-1)
    e = jnp.arange(K, dtype=float)
    r = math.exp(-beta)
    closed = np.array([(1 - r) * r**k / (1 - r**K) for k in range(K)])
    np.testing.assert_allclose(toy.target_probabilities(e, beta), closed, rtol=1e-12)
    mean_closed = r / (1 - r) - K * r**K / (1 - r**K)
    np.testing.assert_allclose(toy.target_mean_energy(e, beta), mean_closed, rtol=1e-12)
    np.testing.assert_allclose(toy.target_probabilities(e, 0.0), np.full(K, 1 / K), rtol=1e-12)
    # Exact samples hit every point with its probability (each count within 5 sigma).
    n = 40_000
    s = toy.sample_target(x, e, beta, jr.key(0), n)
    counts = np.bincount(np.asarray(s[:, 0]).astype(int), minlength=K)
    sd = np.sqrt(n * closed * (1 - closed))
    assert np.all(np.abs(counts - n * closed) < 5 * sd + 1)


def test_sliced_wasserstein_closed_forms():
    x = jr.normal(jr.key(0), (400, 2))
    c = jnp.array([0.6, -0.8])
    # A translation by c moves every 1D projection by <c, theta>: SW2 = |c| / sqrt(2).
    np.testing.assert_allclose(toy.sliced_wasserstein(x, x + c), 1.0 / math.sqrt(2), rtol=1e-5)
    # Sets of different sizes holding the same empirical law are at distance zero.
    np.testing.assert_allclose(toy.sliced_wasserstein(x, jnp.concatenate([x, x])), 0.0, atol=1e-6)
    # Random directions (any dimension) estimate the same quantity.
    d = toy.sliced_wasserstein(x, x + c, n_projections=4000, key=jr.key(1))
    assert abs(float(d) - 1.0 / math.sqrt(2)) < 0.03


def test_datasets_and_energies_are_well_formed():
    for name in toy.DATASETS:
        x = toy.dataset(name, 500, jr.key(1))
        e = toy.energy(name)(x)
        assert x.shape == (500, 2) and e.shape == (500,)
        assert bool(jnp.all(jnp.isfinite(x))) and bool(jnp.all(e >= 0))
        np.testing.assert_array_equal(x, toy.dataset(name, 500, jr.key(1)))  # keyed


def test_distance_at_floor_for_exact_sets_and_larger_for_unguided():
    problem = toy.make_problem("moons", QUICK)
    for beta in (0.0, 3.0):
        a, b = toy.exact_sets(problem, beta, QUICK)
        floor = float(toy.sliced_wasserstein(a, b))  # two exact sets: sampling noise only
        unguided = problem.x[: QUICK.n_eval]  # exact samples of p, i.e. a perfect beta=0 model
        d = float(toy.sliced_wasserstein(unguided, a))
        if beta == 0.0:
            assert d < 2.5 * floor
        else:
            assert d > 5 * floor


@pytest.fixture(scope="module")
def trained_moons():
    problem = toy.make_problem("moons", QUICK)
    nets = {}

    def get(kind, beta):
        if (kind, beta) not in nets:
            nets[(kind, beta)] = toy.train_network(
                kind, problem.x, problem.energy, beta, QUICK, jr.key(7)
            )
        return nets[(kind, beta)]

    return problem, get


def test_quick_efm_beats_unguided_model(trained_moons):
    problem, get = trained_moons
    beta = 3.0
    fm = toy.build_model("fm", beta, QUICK, get)
    efm = toy.build_model("efm", beta, QUICK, get)
    m_fm, _ = toy.evaluate(fm, problem, beta, QUICK, jr.key(3))
    m_efm, _ = toy.evaluate(efm, problem, beta, QUICK, jr.key(3))
    # Guidance does something, measured against the exact target: closer samples, mean
    # energy near the exact one, and a higher likelihood of exact target samples.
    assert m_efm["sw2"] < 0.5 * m_fm["sw2"]
    exact = m_efm["exact_mean_energy"]
    assert abs(m_efm["mean_energy"] - exact) < 0.5 * abs(m_fm["mean_energy"] - exact)
    assert m_efm["nll"] < m_fm["nll"]


def test_efm_beta_input_sweeps_guidance_with_one_network(trained_moons):
    problem, get = trained_moons
    energies = []
    for beta in (0.0, 3.0):
        model = toy.build_model("efm-beta", beta, QUICK, get)
        x = toy.draw(model, jr.key(4), QUICK.n_eval)
        energies.append(float(jnp.mean(toy.energy("moons")(x))))
    exact = [float(toy.target_mean_energy(problem.energy, b)) for b in (0.0, 3.0)]
    assert energies[1] < energies[0] - 0.5 * (exact[0] - exact[1])


def _draw_scores(model, problem, beta):
    """Sliced W2 to the exact target and the mean energy of the model's samples."""
    x = toy.draw(model, jr.key(4), QUICK.n_eval)
    target, _ = toy.exact_sets(problem, beta, QUICK)
    return float(toy.sliced_wasserstein(x, target)), float(jnp.mean(toy.energy("moons")(x))), x


def test_ed_guidance_beats_unguided_model(trained_moons):
    problem, get = trained_moons
    beta = 3.0
    exact = float(toy.target_mean_energy(problem.energy, beta))
    sw_fm, e_fm, _ = _draw_scores(toy.build_model("fm", beta, QUICK, get), problem, beta)
    sw_ed, e_ed, _ = _draw_scores(toy.build_model("ed", beta, QUICK, get), problem, beta)
    assert sw_ed < 0.75 * sw_fm  # measured 0.51 vs 0.98
    assert abs(e_ed - exact) < 0.5 * abs(e_fm - exact)  # measured 0.009 vs 0.22


def test_qgpo_energy_guidance_lowers_energy_and_vanishes_at_beta_zero(trained_moons):
    problem, get = trained_moons
    exact = [float(toy.target_mean_energy(problem.energy, b)) for b in (0.0, 3.0)]
    _, e0, x0 = _draw_scores(toy.build_model("qgpo", 0.0, QUICK, get), problem, 0.0)
    _, e3, _ = _draw_scores(toy.build_model("qgpo", 3.0, QUICK, get), problem, 3.0)
    # The energy net's gradient steers towards low energy (measured 0.495 -> 0.211; the
    # exact target moves 0.497 -> 0.273).
    assert e3 < e0 - 0.5 * (exact[0] - exact[1])
    # At beta 0 the contrastive targets are uniform, so the trained energy net is flat in x
    # and QGPO samples its behaviour model (ed at beta 0) from the same noise (measured 0.005).
    _, _, behaviour = _draw_scores(toy.build_model("ed", 0.0, QUICK, get), problem, 0.0)
    assert float(jnp.max(jnp.abs(x0 - behaviour))) < 0.05


def test_cfg_is_right_at_beta_one_and_unguided_at_beta_zero(trained_moons):
    # The labels c ~ Bernoulli(exp(-(E - E_min))) make p(x | c=1) the exact target at beta 1
    # (Lemma 4.11), where CFG's scale w = beta samples it; at beta 0 it is the null model.
    problem, get = trained_moons
    exact1 = float(toy.target_mean_energy(problem.energy, 1.0))
    sw_fm, e_fm, _ = _draw_scores(toy.build_model("fm", 1.0, QUICK, get), problem, 1.0)
    sw_cfg, e_cfg, _ = _draw_scores(toy.build_model("cfg", 1.0, QUICK, get), problem, 1.0)
    assert sw_cfg < 0.8 * sw_fm  # measured 0.32 vs 0.51
    assert abs(e_cfg - exact1) < 0.5 * abs(e_fm - exact1)  # measured 0.016 vs 0.073
    _, e0, _ = _draw_scores(toy.build_model("cfg", 0.0, QUICK, get), problem, 0.0)
    assert abs(e0 - float(jnp.mean(problem.energy))) < 0.03  # measured 0.002


_LEGACY_TRAIN = """
import os, sys
import numpy as np
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the fixture was made
import ewfm.toy as toy
cfg = toy.ToyConfig(data="8gaussians", method=sys.argv[1], beta=3.0,
                    n_data=512, steps=40, n_eval=256, n_nll=50, batch_size=128)
np.save(sys.argv[2], toy.train(cfg).samples)
"""


@pytest.mark.parametrize("method", ["efm", "qgpo"])
def test_legacy_toy_samples_unchanged(method, tmp_path):
    """The tiny runs of tests/data/legacy/make.py, made by the code before the run skeleton.

    Trained in a subprocess pinned to one core, as the fixture was: XLA's CPU reductions
    depend on the thread count, and 40 training steps carry that rounding into the samples.
    """
    out = tmp_path / "samples.npy"
    subprocess.run([sys.executable, "-c", _LEGACY_TRAIN, method, str(out)], check=True)
    expected = np.load(LEGACY / "expected.npz")[f"toy_{method}/samples"]
    legacy_close(np.load(out), expected)


def test_guided_fields_take_a_traced_scale():
    f = lambda x, t, c: x * (1.0 if c is None else 2.0) + t
    x, t = jnp.ones(2), jnp.asarray(0.5)
    g = jax.jit(lambda w: ewfm.CFGField(f, w)(x, t, jnp.ones(1)))
    np.testing.assert_allclose(g(jnp.asarray(3.0)), ewfm.CFGField(f, 3.0)(x, t, jnp.ones(1)))


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["toy", "run", "--data", "nope", "--out", "X"], ", ".join(toy.DATASETS)),
        (["toy", "run", "--data", "moons", "--method", "nope", "--out", "X"], "efm-beta"),
        (["toy", "run", "--data", "moons", "--beta", "-1", "--out", "X"], "beta must be"),
        (["toy", "run", "--ot-solver", "dpm2", "--out", "X"], "midpoint, heun, euler, tsit5"),
        (["toy", "run", "--batch-size", "100", "--out", "X"], "multiple of cep_group"),
        (["toy", "run", "--preset", "fast", "--out", "X"], "default, quick"),
        (["toy", "run", "--config", "nope.toml", "--out", "X"], "does not exist"),
        (["toy", "sweep", "--out", "X", "--data", "moons,nope"], ", ".join(toy.DATASETS)),
        (["toy", "sweep", "--out", "X", "--methods", "efm,qgp"], ", ".join(toy.METHODS)),
        (["toy", "sweep", "--out", "X", "--betas", "0,-3"], "beta must be"),
        (["toy", "sweep", "--out", "X", "--betas", "0,x"], "beta must be a number"),
    ],
)
def test_cli_bad_input_is_one_line_error(args, needle, tmp_path):
    args = [str(tmp_path / "out") if a == "X" else a for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert not (tmp_path / "out").exists()


def test_library_refuses_bad_input(tmp_path):
    with pytest.raises(toy.ConfigError, match="8gaussians, swissroll"):
        toy.dataset("spiral", 10, jr.key(0))
    with pytest.raises(toy.ConfigError, match="efm, ed, qgpo"):
        toy.check_method("EFM")
    with pytest.raises(toy.ConfigError, match=">= 0"):
        toy.ToyConfig(data="moons", beta=-0.5)
    with pytest.raises(toy.ConfigError, match="beta must be a finite number >= 0"):
        toy.check_betas([0.0, float("inf")])
    with pytest.raises(toy.ConfigError, match="cfg_dropout must lie in"):
        toy.ToyConfig(cfg_dropout=1.0)
    with pytest.raises(toy.ConfigError, match="unknown config key 'stpes'; did you mean 'steps'"):
        toy.resolve_config("quick", overrides={"stpes": 10})
    # A sweep checks every name before it writes anything.
    with pytest.raises(toy.ConfigError, match="unknown method 'nope'"):
        toy.sweep(tmp_path / "sweep", QUICK, methods=["efm", "nope"])
    assert not (tmp_path / "sweep").exists()


def test_presets_and_config_file(tmp_path):
    assert toy.resolve_config("quick") == toy.ToyConfig(**toy.PRESETS["quick"])
    assert toy.resolve_config() == toy.ToyConfig()
    (tmp_path / "c.toml").write_text('[toy]\nsteps = 7\nmethod = "ed"\n')
    cfg = toy.resolve_config("quick", tmp_path / "c.toml", {"seed": 3, "steps": None})
    assert (cfg.steps, cfg.method, cfg.seed, cfg.n_data) == (7, "ed", 3, 5_000)


def test_run_directory_is_checked_before_any_work(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(toy.ConfigError, match="not empty"):
        toy.train(QUICK, tmp_path / "other")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


def test_cli_run_writes_metrics_and_figure(tmp_path):
    out = tmp_path / "run"
    args = ["toy", "run", "--data", "moons", "--method", "efm", "--beta", "3", "--quick",
            "--steps", "300", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "moons" and metrics["method"] == "efm" and metrics["beta"] == 3.0
    for k in ("sw2", "floor", "mean_energy", "exact_mean_energy", "nll", "ms_per_1000"):
        assert math.isfinite(metrics[k])
    assert (out / "samples.png").stat().st_size > 1000
    # load_run reads the run back: its settings, metrics, samples and exact target samples.
    run = toy.load_run(out)
    assert run.config == toy.resolve_config("quick", overrides=dict(
        data="moons", method="efm", beta=3.0, steps=300))  # fmt: skip
    assert run.metrics == {k: v for k, v in metrics.items() if k != "config"}
    assert run.samples.shape == run.target.shape == (QUICK.n_eval, 2)
    np.testing.assert_array_equal(run.problem.x, toy.make_problem("moons", QUICK).x)
    with pytest.raises(toy.ConfigError, match="not a finished run directory"):
        toy.load_run(tmp_path)
    # The same directory with other settings is refused, before any work, files untouched.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = runner.invoke(app, [*args[:-2], "--beta", "1", "--out", str(out)])
    assert result.exit_code == 2 and "beta" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_cli_help_explains_every_flag():
    result = runner.invoke(app, ["toy", "run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--data", "--method", "--beta", "--steps", "--ot-solver", "--vp-solver"):
        assert flag in result.output
    assert "dpm2" in result.output and "efm-beta" in result.output
    assert "guidance strength" in result.output
