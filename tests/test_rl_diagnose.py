"""`ewfm diagnose critic`: its statistics on synthetic critics with known answers, and the
command end to end on a tiny run (files written, numbers finite and consistent, bad input
refused in one line)."""

import json
import math
import shutil

import numpy as np
import pytest
from ewfm_cli.main import app
from helpers import TINY_RL
from typer.testing import CliRunner

from ewfm.rl import (
    StopTraining,
    diagnose_critic,
    norm_slope,
    resolve_config,
    score_probe,
    split_half_reliability,
    train,
    truth_gain,
    weight_gain,
    within_spearman,
)

# -- statistics on synthetic data ---------------------------------------------------------------


def _synthetic(n, m, k, var_noise, seed=0):
    """True Q (within-state variance 1, a state offset of scale 10) and K noisy returns of
    per-rollout noise variance ``var_noise``; actions of dimension 3 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    q_true = rng.standard_normal((n, m)) + 10 * rng.standard_normal((n, 1))
    returns = q_true[..., None] + math.sqrt(var_noise) * rng.standard_normal((n, m, k))
    actions = rng.uniform(-1, 1, (n, m, 3))
    return q_true, returns, actions


def _moran(rho, m):
    """Expected Spearman correlation of m bivariate-normal pairs of Pearson correlation rho
    (Moran 1948): ranks of Gaussian values correlate a little less than the values."""
    return 6 / (math.pi * (m + 1)) * (math.asin(rho) + (m - 2) * math.asin(rho / 2))


def test_reliability_matches_the_closed_form_of_known_noise():
    n, m, k, var_noise = 3000, 16, 8, 2.0
    _, returns, _ = _synthetic(n, m, k, var_noise)
    closed = 1 / (1 + var_noise / k)  # var_true / (var_true + var_noise / K), var_true = 1
    est = split_half_reliability(returns)
    # what the rank version estimates exactly: the halves' Pearson correlation (K/2 rollouts
    # each) through Moran's expectation for M ranks, then Spearman-Brown to K
    rho_half = 1 / (1 + 2 * var_noise / k)
    r_s = _moran(rho_half, m)
    expected = 2 * r_s / (1 + r_s)
    halves = within_spearman(returns[..., ::2].mean(-1), returns[..., 1::2].mean(-1))
    se = halves.std(ddof=1) / math.sqrt(n) * 2 / (1 + r_s) ** 2  # through Spearman-Brown
    assert abs(est - expected) < 4 * se, (est, expected, se)
    assert abs(est - closed) < 0.05  # ranks of 16 supports sit just below the closed form
    # more rollouts, less noise: the estimate follows the closed form's rise
    _, returns32, _ = _synthetic(n, m, 32, var_noise, seed=1)
    assert split_half_reliability(returns32) > est + 0.1


def test_a_critic_equal_to_the_true_expected_q_scores_about_its_ceiling():
    q_true, returns, actions = _synthetic(2000, 16, 8, 2.0)
    p = score_probe(q_true, returns, actions, beta=1.0, q_norm="spread")
    assert p["ceiling"] == pytest.approx(math.sqrt(p["reliability"]))
    assert p["rank_fraction"] == pytest.approx(p["rank_corr"] / p["ceiling"])
    # Moran's expectations for this case: 0.853 / sqrt(0.763) = 0.977 of the ceiling
    expected = _moran(math.sqrt(0.8), 16) / math.sqrt(
        2 * _moran(2 / 3, 16) / (1 + _moran(2 / 3, 16))
    )
    assert abs(p["rank_fraction"] - expected) < 0.03
    assert 0.93 < p["rank_fraction"] < 1.03
    # its weights see Q itself, the truth's see half the rollouts: at least the truth's gain
    assert p["gain_truth"] > 0 and p["gain_fraction"] > 0.95
    assert p["slope_critic"] == pytest.approx(p["slope_truth"], abs=0.1)


def test_a_critic_equal_to_the_squared_norm_gives_its_slope_and_hand_ranks():
    # two states, four supports on a line: ||a||^2 ranks them 1, 2, 3, 4
    actions = np.array([[0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])[..., None]
    norm2 = (actions**2).sum(-1)
    offsets = np.array([[5.0], [-7.0]])
    truth = np.array([[2.0, 1.0, 4.0, 3.0], [4.0, 3.0, 2.0, 1.0]]) + offsets
    returns = np.repeat(truth[..., None], 2, axis=-1)
    # by hand, rho = 1 - 6 sum d^2 / (m (m^2 - 1)): d = (1,1,1,1) -> 0.6; d = (3,1,1,3) -> -1
    np.testing.assert_allclose(within_spearman(norm2, truth), [0.6, -1.0])
    p = score_probe(norm2 + offsets, returns, actions, beta=1.0, q_norm="none")
    assert p["rank_corr"] == pytest.approx(-0.2)
    assert p["slope_critic"] == pytest.approx(1.0, rel=1e-12)
    # a truth that is -3 ||a||^2 plus a state offset: its slope is -3 exactly
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (50, 8, 4))
    q = -3 * (acts**2).sum(-1) + rng.standard_normal((50, 1))
    assert norm_slope(q, acts) == pytest.approx(-3.0, rel=1e-12)
    assert norm_slope(-q, acts) == pytest.approx(3.0, rel=1e-12)


def test_pure_noise_scores_zero_within_its_standard_error():
    n, m = 1000, 16
    _, returns, actions = _synthetic(n, m, 8, 2.0)
    noise = np.random.default_rng(7).standard_normal((n, m))
    p = score_probe(noise, returns, actions, beta=1.0, q_norm="spread")
    # the null distribution of a Spearman correlation of m pairs has variance 1 / (m - 1)
    se = 1 / math.sqrt((m - 1) * n)
    assert p["rank_corr_se"] == pytest.approx(se, rel=0.15)
    assert abs(p["rank_corr"]) < 4 * se
    assert abs(p["rank_fraction"]) < 4 * se / p["ceiling"]
    assert abs(p["gain_critic"]) < 4 * p["gain_critic_se"]
    assert abs(p["gain_fraction"]) < 0.1


def test_the_truths_own_gain_is_cross_fitted_so_noise_does_not_select_itself():
    rng = np.random.default_rng(3)
    returns = rng.standard_normal((2000, 16, 8))  # no true differences: only noise
    in_sample = weight_gain(returns.mean(-1), returns.mean(-1), 3.0)
    crossed = truth_gain(returns, 3.0, "none")
    assert in_sample.mean() > 10 * in_sample.std() / math.sqrt(len(in_sample))  # inflated
    assert abs(crossed.mean()) < 4 * crossed.std() / math.sqrt(len(crossed))


def test_constant_rows_have_no_rank_and_one_rollout_has_no_ceiling():
    rho = within_spearman(np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]), np.ones((2, 3)) * [1, 2, 3])
    assert np.isnan(rho[0]) and rho[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        split_half_reliability(np.zeros((2, 3, 1)))


# -- the command on a tiny run --------------------------------------------------------------------

TINY = dict(TINY_RL, seeds=2)  # two seeds: --seed picks one


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A two-seed qipo-ot run stopped right after its critic (all a diagnosis reads)."""
    cfg = resolve_config("quick", overrides=dict(TINY, dataset=tiny_dataset))
    out = tmp_path_factory.mktemp("diag") / "run"
    last = cfg.critic_mc_epochs + cfg.critic_epochs
    with pytest.raises(StopTraining):
        train(cfg, out, progress=False, log=lambda s: None, stop_after=("critic", last))
    return out


def _invoke(*args):
    return CliRunner().invoke(app, ["diagnose", "critic", *map(str, args), "--quiet"])


def test_diagnose_critic_writes_a_consistent_report(tiny_run, tmp_path):
    out = tmp_path / "d.json"
    res = _invoke(tiny_run, "--seed", 1, "--states", 3, "--rollouts", 2, "--horizon", 5,
                  "--radius", 0.2, "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "rank corr" in res.output and "ceiling" in res.output
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0 and result["plot"]
    arrays = np.load(out.with_suffix(".npz"))
    assert result["seed"] == 1 and result["supports"] == 4 and result["rollouts"] == 2
    assert result["behaviour_policy"] == ["hopper/sac"]
    assert result["state_rebuild_max_error"] < 1e-6  # the simulator state is rebuilt exactly
    for name, p in result["probes"].items():
        q, ret, acts = (arrays[f"{name}_{x}"] for x in ("q", "returns", "actions"))
        assert q.shape == (3, 4) and ret.shape == (3, 4, 2) and acts.shape == (3, 4, 3)
        assert np.isfinite(q).all() and np.isfinite(ret).all()
        for key in ("rank_corr", "reliability", "gain_critic", "slope_critic", "slope_truth"):
            assert math.isfinite(p[key]), (name, key)
        again = score_probe(q, ret, acts, beta=result["beta"], q_norm=result["q_norm"])
        assert again == pytest.approx(p, nan_ok=True)
    # both probes start from the dataset action; the radius probe stays within its radius
    b, r = arrays["behaviour_actions"], arrays["radius_actions"]
    np.testing.assert_array_equal(b[:, 0], r[:, 0])
    assert np.abs(r - r[:, :1]).max() <= 0.2 + 1e-6 and np.abs(r).max() <= 1.0
    # the default place is the run directory
    res = _invoke(tiny_run, "--states", 2, "--rollouts", 2, "--horizon", 2)
    assert res.exit_code == 0, res.output
    assert (tiny_run / "diagnose_critic.json").exists()


def test_supports_of_a_state_share_their_random_numbers(tiny_run, tmp_path):
    """Common random numbers: at a radius too small to matter, a state's supports get the
    same returns, while its rollouts (other noise) differ."""
    r = diagnose_critic(tiny_run, states=2, rollouts=2, horizon=8, radius=1e-9,
                        out=tmp_path / "crn.json", progress=False)  # fmt: skip
    ret = np.load(tmp_path / "crn.npz")["radius_returns"]
    across_supports = np.abs(ret - ret[:, :1]).max()
    across_rollouts = np.abs(ret[..., 0] - ret[..., 1]).min()
    assert across_supports < 1e-5 < across_rollouts, (across_supports, across_rollouts)
    assert r["probes"]["radius"]["spread_truth"] < 1e-5


def _copy_run(src, dst, **config):
    """The run's config and statistics (no checkpoints), the config changed by ``config``."""
    dst.mkdir()
    for f in ("config.json", "obs_stats.json"):
        shutil.copy(src / f, dst / f)
    cfg = json.loads((dst / "config.json").read_text()) | config
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--seed", 2), "seed 2 is out of range"),
        (("--rollouts", 1), "rollouts must be >= 2"),
        (("--states", 1), "states must be >= 2"),
        (("--supports", 2), "supports must be >= 3"),
        (("--radius", 0), "radius must be in (0, 2]"),
        (("--horizon", 0), "horizon must be >= 1"),
    ],
)
def test_bad_settings_are_refused_in_one_line(tiny_run, args, message):
    res = _invoke(tiny_run, *args)
    assert res.exit_code == 2
    assert message in res.output and res.output.count("\n") == 1, res.output


def test_runs_without_a_critic_or_data_are_refused_in_one_line(tiny_run, tmp_path, monkeypatch):
    bc = _copy_run(tiny_run, tmp_path / "bc", method="bc")
    cases = [
        (bc, "is a bc run: it has no critic"),
        (_copy_run(tiny_run, tmp_path / "bare"), "has no critic checkpoint"),
        (tmp_path / "nothing", "not an ewfm run directory"),
    ]
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(tiny_run, rebuilt)
    stats = json.loads((rebuilt / "obs_stats.json").read_text())
    (rebuilt / "obs_stats.json").write_text(json.dumps(stats | {"transitions": 12345}))
    cases.append((rebuilt, "the dataset was rebuilt"))
    for run, message in cases:
        res = _invoke(run)
        assert res.exit_code == 2 and message in res.output, (run, res.output)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    res = _invoke(tiny_run)
    assert res.exit_code == 2 and "is not on this machine" in res.output, res.output
