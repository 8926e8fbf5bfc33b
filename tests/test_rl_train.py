"""`ewfm train`: critic target, support weights, renewal source, eq. 5.4, end to end, bad input,
and runs written before the stages refactor (tests/data/legacy) loading and sampling the same."""

import dataclasses
import json
import math
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import LEGACY, kill_in_stage, legacy_close

import ewfm
from ewfm.rl import (
    ConfigError,
    CriticBatch,
    SupportSet,
    critic_loss,
    discounted_returns,
    draw_supports,
    load_run,
    make_critic,
    make_qipo_loss,
    q_values,
    read_config,
    renew_supports,
    resolve_config,
    resume_config,
    scale_q,
    support_target,
)


class ConstVelocity(eqx.Module):
    """A field with constant velocity ``c``: on the OT path it maps noise x1 to x1 - c."""

    c: jax.Array

    def __call__(self, x, t, cond=None):
        return jnp.broadcast_to(self.c, x.shape)


# -- critic -----------------------------------------------------------------------------------


def test_support_target_hand_computed():
    # beta_Q = ln 2 makes the softmax weights powers of two: [1, 2, 3] -> [2, 4, 8] / 14.
    next_q = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    y = support_target(next_q, jnp.array([0.5, 1.0]), jnp.array([0.0, 1.0]), 0.9, math.log(2.0))
    v0 = (1 * 2 + 2 * 4 + 3 * 8) / 14.0
    np.testing.assert_allclose(np.asarray(y), [0.5 + 0.9 * v0, 1.0], rtol=1e-6)
    # beta_Q = 0 is the mean over the supports, a large beta_Q the max
    y0 = support_target(next_q, jnp.zeros(2), jnp.zeros(2), 1.0, 0.0)
    np.testing.assert_allclose(np.asarray(y0), [2.0, 5.0 / 3.0], rtol=1e-6)
    yinf = support_target(next_q, jnp.zeros(2), jnp.zeros(2), 1.0, 1e4)
    np.testing.assert_allclose(np.asarray(yinf), [3.0, 5.0], rtol=1e-6)


def test_discounted_returns_match_a_loop():
    """Returns restart at every episode end; truncated tails continue at the mean reward."""
    g = 0.9
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    term = np.array([0, 1, 0, 0, 0, 0, 0], np.float32)  # episode 1: steps 0-1, terminated
    tout = np.array([0, 0, 0, 1, 0, 0, 0], np.float32)  # episode 2: steps 2-3, time limit
    got = discounted_returns(r, term, tout, g)  # episode 3: steps 4-6, the data stops

    def by_hand(seg, truncated):
        out, acc = [], (np.mean(seg) / (1 - g) if truncated else 0.0)
        for x in seg[::-1]:
            acc = x + g * acc
            out.append(acc)
        return out[::-1]

    want = by_hand(r[:2], False) + by_hand(r[2:4], True) + by_hand(r[4:], True)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[1] == 2.0  # a terminal step is worth its reward only
    # far from any end the returns of a constant reward approach r / (1 - g)
    flat = discounted_returns(np.ones(400), np.zeros(400), np.eye(1, 400, 399)[0], 0.99)
    np.testing.assert_allclose(flat, 100.0, rtol=1e-12)


def test_critic_loss_matches_loop_and_stops_target_gradient():
    k = jr.split(jr.key(0), 8)
    critic = make_critic(3, 2, width=16, depth=2, key=k[0])
    # a target that differs from the online nets
    other = make_critic(3, 2, width=16, depth=2, key=k[1]).q
    critic = eqx.tree_at(lambda c: c.target, critic, other)
    b, m = 4, 3
    batch = CriticBatch(
        jr.normal(k[2], (b, 3)),
        jr.normal(k[3], (b, 2)),
        jr.normal(k[4], (b,)),
        jr.normal(k[5], (b, 3)),
        jnp.array([0.0, 1.0, 0.0, 0.0]),
        jr.normal(k[6], (b, m, 2)),
    )
    gamma, beta_q = 0.9, 2.0
    loss, grads = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda c: critic_loss(c, batch, k[7], gamma=gamma, beta_q=beta_q))
    )(critic)
    one = eqx.filter_jit(lambda net, s, a: net(s, a))  # one (s, a) pair, both twins
    total = 0.0
    for i in range(b):
        qn = [
            float(np.min(one(other, batch.next_observations[i], batch.next_supports[i, j])))
            for j in range(m)
        ]
        w = np.exp(beta_q * np.array(qn))
        w /= w.sum()
        y = float(batch.rewards[i]) + gamma * (1 - float(batch.terminals[i])) * float(w @ qn)
        q2 = np.asarray(one(critic.q, batch.observations[i], batch.actions[i]))
        total += float(np.sum((q2 - y) ** 2))
    np.testing.assert_allclose(float(loss), total / b, rtol=1e-5)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads.target, eqx.is_array))
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in leaves)


def test_soft_target_update_moves_target_by_tau():
    from ewfm.rl import soft_target_optimizer

    critic = make_critic(2, 1, width=8, depth=1, key=jr.key(0))
    other = make_critic(2, 1, width=8, depth=1, key=jr.key(1)).q
    critic = eqx.tree_at(lambda c: c.target, critic, other)
    opt = soft_target_optimizer(optax.sgd(0.0), 0.1)

    @eqx.filter_jit
    def step(critic):
        params = eqx.filter(critic, eqx.is_inexact_array)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        upd, _ = opt.update(zeros, opt.init(params), params)
        return eqx.apply_updates(critic, upd)

    new = step(critic)
    w_q, w_t = critic.q.nets.layers[0].weight, other.nets.layers[0].weight
    np.testing.assert_allclose(
        np.asarray(new.target.nets.layers[0].weight),
        np.asarray(w_t + 0.1 * (w_q - w_t)),
        rtol=1e-6,
    )


# -- supports and renewal ------------------------------------------------------------------


def test_renewal_draws_from_current_policy_and_weights_sum_to_m():
    behaviour, current = ConstVelocity(jnp.array([5.0])), ConstVelocity(jnp.array([-5.0]))
    state = ewfm.TrainState(behaviour, current, None, jnp.zeros((), jnp.int32))
    sampler = ewfm.Sampler(ewfm.OTPath(), "midpoint", 2, "velocity", None)
    states = jr.normal(jr.key(0), (50, 2))
    data = jnp.full((50, 1), 0.25)
    critic = make_critic(2, 1, width=8, depth=1, key=jr.key(1))
    sset = renew_supports(
        state,
        sampler,
        eqx.filter_jit(q_values),
        critic.q,
        states,
        jr.key(2),
        m=8,
        action_dim=1,
        data_actions=data,
    )
    assert sset.actions.shape == (50, 8, 1)
    np.testing.assert_array_equal(np.asarray(sset.actions[:, 0]), np.asarray(data))
    drawn = np.asarray(sset.actions[:, 1:])
    # the EMA policy maps x1 to x1 + 5; the behaviour model would give x1 - 5
    assert abs(drawn.mean() - 5.0) < 0.2 and abs(drawn.std() - 1.0) < 0.15
    np.testing.assert_allclose(
        np.asarray(sset.q),
        np.asarray(eqx.filter_jit(q_values)(critic.q, states, sset.actions)),
        rtol=1e-6,
    )
    w = ewfm.grouped_energy_weights(-sset.q, 3.0)
    np.testing.assert_allclose(np.asarray(w.sum(axis=1)), 8.0, rtol=1e-5)
    # chunking does not change the draw count or shape
    out = eqx.filter_jit(draw_supports)(
        current, sampler, states[:7], jr.key(3), m=3, action_dim=1, chunk=4
    )
    assert out.shape == (7, 3, 1)


def test_q_norm_weights_are_free_of_q_units(x64):
    """``spread``: the weights at beta equal the paper's at beta / (mean within-state std),
    computed per seed; ``spread`` and ``state`` ignore Q's unit and per-state offsets."""
    q = jr.normal(jr.key(0), (2, 5, 4), jnp.float64) * jnp.array([3.0, 0.5])[:, None, None]
    q = q.at[1, 2].set(7.0)  # a state whose supports tie
    beta = 1.7
    for k in range(2):
        spread = np.mean(np.std(np.asarray(q[k]), axis=-1))
        np.testing.assert_allclose(
            np.asarray(ewfm.grouped_energy_weights(-scale_q(q, "spread")[k], beta)),
            np.asarray(ewfm.grouped_energy_weights(-q[k], beta / spread)),
            rtol=1e-12,
        )
    z = np.asarray(scale_q(q, "state"))
    np.testing.assert_allclose(np.std(z, axis=-1)[0], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(z[1, 2], 0.0)  # tied supports keep uniform weights
    offset = jr.normal(jr.key(1), (2, 5, 1), jnp.float64) * 100.0
    for norm in ("spread", "state"):
        np.testing.assert_allclose(
            np.asarray(scale_q(650.0 * q + offset, norm)), np.asarray(scale_q(q, norm)), atol=1e-9
        )
    assert scale_q(q, "none") is q
    with pytest.raises(ValueError, match="unknown q_norm 'z'; choose one of none, spread, state"):
        scale_q(q, "z")


def test_dpm2_sampling_works_under_jit():
    # regression: integrate() converted alpha(t_start) to float, which failed under jit
    field = ConstVelocity(jnp.zeros(1))
    sampler = ewfm.Sampler(ewfm.VPPath(), "dpm2", 3, "eps", 1.0)
    out = eqx.filter_jit(draw_supports)(
        field, sampler, jnp.zeros((4, 2)), jr.key(0), m=2, action_dim=1
    )
    assert out.shape == (4, 2, 1) and bool(jnp.all(jnp.isfinite(out)))


# -- eq. 5.4: n renewals on a contextual bandit -> mu exp(n beta Q) -------------------------------


def test_bandit_renewals_reach_closed_form():
    """Behaviour N(0, 1) in contexts s = ±1, Q(s, a) = -(a - s)^2 / 2, beta = 1.

    After n renewals the policy is mu exp(n beta Q) = N(n s / (1 + n), 1 / (1 + n)).
    """
    path = ewfm.OTPath()
    sampler = ewfm.Sampler(path, "midpoint", 8, "velocity", None)
    k = jr.split(jr.key(0), 6)
    n_data = 4096
    s = jnp.where(jr.bernoulli(k[0], 0.5, (n_data, 1)), 1.0, -1.0)
    a = jr.normal(k[1], (n_data, 1))
    field = ewfm.MLPField(1, cond_dim=1, width=64, depth=2, key=k[2])
    opt = optax.adam(2e-3)
    bc = lambda mdl, b, key: ewfm.cfm_loss(mdl, path, b[1], key, cond=b[0])
    epoch = ewfm.make_epoch(bc, opt, batch_size=256, steps=800, ema_decay=0.9)
    state, _ = epoch(ewfm.init_state(field, opt), (s, a), k[3])
    q_fn = lambda st, act: -0.5 * (act[..., 0] - st[:, None, 0]) ** 2
    beta, m, n_states = 1.0, 32, 512
    states = jnp.where(jnp.arange(n_states)[:, None] % 2 == 0, 1.0, -1.0)
    qopt = optax.adam(1e-3)
    qepoch = ewfm.make_epoch(
        make_qipo_loss(path, beta, "velocity"), qopt, batch_size=32, steps=800, ema_decay=0.9
    )
    n_rounds = 2
    state = ewfm.TrainState(
        state.ema,
        state.ema,
        qopt.init(eqx.filter(state.ema, eqx.is_inexact_array)),
        jnp.zeros((), jnp.int32),
    )
    draw = eqx.filter_jit(draw_supports)
    for r in range(n_rounds):
        sup = draw(state.ema, sampler, states, jr.fold_in(k[4], r), m=m, action_dim=1)
        sset = SupportSet(states, sup, q_fn(states, sup))
        state, _ = qepoch(state, sset, jr.fold_in(k[5], r))
    test_s = jnp.repeat(jnp.array([[1.0], [-1.0]]), 4000, axis=0)
    draw = eqx.filter_jit(lambda f, k, s: sampler(f, k, (s.shape[0], 1), s))
    acts = np.asarray(draw(state.ema, jr.key(9), test_s))[:, 0]
    n = n_rounds
    for sign, part in ((1.0, acts[:4000]), (-1.0, acts[4000:])):
        assert abs(part.mean() - sign * n / (1 + n)) < 0.08, part.mean()
        assert abs(part.var() - 1.0 / (1 + n)) < 0.06, part.var()


# -- configuration and bad input ------------------------------------------------------------


def test_config_presets_overrides_and_errors(tmp_path):
    cfg = resolve_config("quick", overrides={"beta": 2, "method": "qipo-diff"})
    assert cfg.beta == 2.0 and cfg.method == "qipo-diff" and cfg.policy_solver == "dpm2"
    assert cfg.policy_steps == 15 and resolve_config().policy_steps == 5
    assert resolve_config("paper").support == 16
    toml = tmp_path / "c.toml"
    toml.write_text("beta = 5.0\nsupport = 4\n")
    cfg = resolve_config("quick", toml, {"support": 6})
    assert cfg.beta == 5.0 and cfg.support == 6  # flags beat the file
    toml.write_text("[train]\nbeta = 4.0\n")
    assert resolve_config("quick", toml).beta == 4.0
    toml.write_text("betta_q = 5.0\n")
    with pytest.raises(ConfigError, match="did you mean 'beta_q'"):
        resolve_config("quick", toml)
    toml.write_text('algo = "qgpo"\n')
    with pytest.raises(ConfigError, match="'algo' is now called 'method'"):
        resolve_config("quick", toml)
    with pytest.raises(ConfigError, match="unknown method 'sac'; choose one of qipo-ot"):
        resolve_config(overrides={"method": "sac"})
    with pytest.raises(ConfigError, match="beta must be a finite number >= 0"):
        resolve_config(overrides={"beta": -1.0})
    with pytest.raises(ConfigError, match=r"support \(M\) must be >= 1"):
        resolve_config(overrides={"support": 0})
    with pytest.raises(ConfigError, match="unknown q_norm 'zscore'; choose one of none, spread"):
        resolve_config(overrides={"q_norm": "zscore"})
    with pytest.raises(ConfigError, match="solver dpm2 needs a VP method"):
        resolve_config(overrides={"solver": "dpm2"})
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        resolve_config("fast")
    # a run directory from before q_norm existed reads back as what it ran: the paper's
    # weights; one from before `method` and `solver auto` reads its `algo` and `solver ""`
    old = dataclasses.asdict(resolve_config("quick", overrides={"method": "qgpo"}))
    assert old.pop("q_norm") == "spread" and resolve_config("paper").q_norm == "none"
    old["algo"], old["solver"] = old.pop("method"), ""
    del old["critic"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    back = read_config(tmp_path / "config.json")
    assert (back.q_norm, back.method, back.solver, back.critic) == (
        "none", "qgpo", "auto", "in-support",
    )  # fmt: skip
    assert back.policy_solver == "dpm2"
    # resuming: the run's config.json, then the TOML file, then the overrides
    toml.write_text("beta = 7.0\n")
    got = resume_config(tmp_path, toml, {"guidance": 2.0, "seed": None})
    assert (got.method, got.q_norm, got.beta, got.guidance) == ("qgpo", "none", 7.0, 2.0)
    with pytest.raises(ConfigError, match="nothing to resume"):
        resume_config(tmp_path / "nowhere")


def _cli(args):
    from ewfm_cli.main import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, args)


def test_cli_bad_input(tmp_path):
    cases = [
        (["train", "--method", "sac"], "unknown method 'sac'; choose one of qipo-ot"),
        (["train", "--beta", "-1"], "beta must be a finite number >= 0"),
        (["train", "--support", "0"], "support (M) must be >= 1"),
        (["train", "--dataset", "nosuchenv-medium", "--out", str(tmp_path / "r")], "nosuchenv"),
        (["train", "--resume"], "--resume needs --out"),
        (["evaluate", str(tmp_path), "--episodes", "0"], "episodes must be >= 1"),
        (["evaluate", str(tmp_path)], "holds no config.json"),
    ]
    toml = tmp_path / "bad.toml"
    toml.write_text("renew_evry = 3\n")
    cases.append((["train", "--config", str(toml)], "did you mean 'renew_every'"))
    for args, msg in cases:
        res = _cli(args)
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output, (args, res.output)
        assert "Traceback" not in res.output
    # resuming a run with a different dataset
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(resolve_config())))
    res = _cli(["train", "--out", str(run), "--resume", "--dataset", "walker2d-medium"])
    assert res.exit_code == 2 and "made with dataset='hopper-medium'" in res.output
    res = _cli(["train", "--out", str(run)])
    assert res.exit_code == 2 and "--resume" in res.output
    # a resumed run keeps its own settings: a preset would be ignored, so it is refused
    res = _cli(["train", "--out", str(run), "--resume", "--preset", "paper"])
    assert res.exit_code == 2 and "drop --preset" in res.output


def test_cli_help_explains_every_flag():
    import re

    res = _cli(["train", "--help"])
    assert res.exit_code == 0
    text = re.sub(r"[\s│]+", " ", res.output)
    for method in ("qipo-ot", "qipo-diff", "bc", "qgpo"):
        assert f"{method}: " in text  # each method listed with what it is
    for flag in ("--beta-q", "--q-norm", "--renew-every", "--keep-data-action", "--critic"):
        assert flag in text
    assert "spread: Q divided by" in text and "(K_renew)" in text
    assert "inverse temperature of the Q target" in text


# -- end to end on a tiny built dataset, with kill-and-resume -----------------------------------


TINY = dict(
    subset=600,
    steps_per_epoch=10,
    width=32,
    depth=2,
    critic_width=32,
    critic_depth=1,
    bc_epochs=1,
    critic_mc_epochs=1,
    critic_epochs=1,
    qipo_epochs=3,
    renew_every=2,
    support=4,
    critic_support=3,
    qipo_states=8,
    batch_size=64,
    critic_batch=64,
    sample_steps=2,
    eval_every=2,
    eval_episodes=2,
    final_episodes=2,
    eval_max_steps=30,
    # the critic as the legacy runs (tests/data/legacy) trained it, so that their losses
    # stay comparable: raw rewards and the Q(s, a) warm start, the defaults before those
    # settings existed
    reward_scale="none",
    critic_warm_start="q",
)


def _losses(run_dir):
    """Every epoch's loss and per-seed losses, in order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [[m["loss"], *m.get("seed_losses", [])] for m in map(json.loads, lines)]


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))]


def _trained(run_dir):
    """The raw (not EMA) networks of every stage and the final EMA policy, by name."""
    run = load_run(run_dir)
    out = {name: run.load(name)[0].model for name in ("behaviour", "critic", "qipo")}
    return {**out, "policy": run.networks()[0]}


def _trains_like(pair, j, single):
    """Seed ``j`` of a ``--seeds K`` run against a single run: equal up to the rounding of
    batched kernels (measured: at most 3e-8 after these 200-400 steps; a QIPO stage trained
    on another seed's stream from the same start differs by 3e-2)."""
    for name in pair:
        for x, y in zip(_leaves(pair[name]), _leaves(single[name]), strict=True):
            np.testing.assert_allclose(x[j], y[0], rtol=1e-4, atol=1e-5, err_msg=name)


def _strip(run_dir):
    """metrics.jsonl without timings."""
    return [
        {k: v for k, v in json.loads(line).items() if "seconds" not in k and k != "steps_per_s"}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def _assert_same_run(a, b, stages):
    """Two run directories hold the same training: every stage's checkpoint (state and what
    it keeps beside it), the final policy, the metrics and the scores, timings aside."""
    ra, rb = load_run(a), load_run(b)
    for name in stages:
        (sa, xa, ma), (sb, xb, mb) = ra.load(name), rb.load(name)
        assert ma["epoch"] == mb["epoch"]
        for x, y in zip(_leaves((sa, xa)), _leaves((sb, xb)), strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)
    for x, y in zip(_leaves(ra.networks()), _leaves(rb.networks()), strict=True):
        np.testing.assert_array_equal(x, y)
    assert _strip(a) == _strip(b)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    for k in ("scores", "seed_scores", "behaviour_seed_scores"):
        assert sa.get(k) == sb.get(k), k


def test_end_to_end_kill_and_resume_with_two_seeds(tiny_dataset, tmp_path):
    """A ``--seeds 2`` run: stopped after QIPO's epoch 2 and resumed it matches the
    uninterrupted run exactly, its ``eval_*.eqx`` checkpoints hold the policy of their epoch,
    and its losses are those the code before the stages refactor wrote (tests/data/legacy).
    Seed j against a separate run, and SIGKILLs inside every stage: the paper-preset test."""
    from ewfm.rl import StopTraining, evaluate_run, load_transitions, train

    quiet = dict(progress=False, log=lambda s: None)
    cfg = resolve_config("quick", overrides=dict(TINY, dataset=tiny_dataset, seed=0, seeds=2))
    a, b = tmp_path / "a", tmp_path / "b"
    full = train(cfg, a, **quiet)
    with pytest.raises(StopTraining):
        train(cfg, b, stop_after=("qipo", 2), **quiet)
    assert not (b / "summary.json").exists()
    # the periodic checkpoint of epoch 2 is the EMA policy of QIPO's state after epoch 2
    state, _, meta = load_run(b).load("qipo")
    field, energy_net = load_run(a).networks("eval_qipo_0002.eqx")
    assert meta["epoch"] == 2 and energy_net is None
    for x, y in zip(_leaves(field), _leaves(state.ema), strict=True):
        np.testing.assert_array_equal(x, y)
    resumed = train(cfg, b, resume=True, **quiet)
    assert resumed["scores"] == full["scores"]
    _assert_same_run(a, b, ("behaviour", "critic", "qipo"))
    stages = [m["stage"] for m in _strip(a)]
    assert stages == ["behaviour", "critic", "critic"] + ["qipo"] * 3
    phases = [m.get("phase") for m in _strip(a)]
    assert phases[1:3] == ["returns", "td"]
    # the legacy run has this run's settings up to QIPO's first epoch (it renews every epoch
    # from there on); evaluations do not touch the training streams
    legacy_close(_losses(a)[:4], _losses(LEGACY / "rl_qipo_ot")[:4])
    for name in ("config.json", "summary.json", "curves.png", "metrics.jsonl"):
        assert (a / name).is_file()
    assert math.isfinite(full["score_mean"]) and full["episodes"] == 4
    assert full["seeds"] == 2 and len(full["seed_scores"]) == 2
    assert full["method"] == full["algo"] == "qipo-ot"
    ev = evaluate_run(a, episodes=2, seed=full["seed"] * 100_000 + 99_999)
    assert math.isfinite(ev["score_mean"]) and ev["episodes"] == 4
    with pytest.raises(ConfigError, match="qgpo runs only"):
        evaluate_run(a, guidance=1.0)
    mid = evaluate_run(a, episodes=1, checkpoint="eval_qipo_0002.eqx")
    assert mid["checkpoint"].endswith("eval_qipo_0002.eqx") and mid["episodes"] == 2
    with pytest.raises(ConfigError, match="no checkpoint"):
        evaluate_run(a, checkpoint="eval_qipo_0009.eqx")

    # the run read back: config, statistics and every stage's checkpoint
    run = load_run(a)
    assert run.config == cfg and (run.obs_dim, run.act_dim) == (11, 3)
    _, sset, meta = run.load("qipo")
    assert meta["epoch"] == 3 and sset.actions.shape == (2, run.dims.supports, 4, 3)
    np.testing.assert_array_equal(np.asarray(sset.actions), np.asarray(run.support_set().actions))
    assert ewfm.rl.seed_count(run.behaviour()) == 2 and ewfm.rl.seed_count(run.q_net()) == 2
    with pytest.raises(ConfigError, match="no cep checkpoint"):
        run.load("cep")
    # keep_data_action (the default): every state's first support is a dataset action
    data = {x.tobytes() for x in np.asarray(load_transitions(cfg.dataset).actions, np.float32)}
    first = np.asarray(sset.actions[:, :, 0], np.float32).reshape(-1, 3)
    assert all(x.tobytes() in data for x in first)
    assert not any(x.tobytes() in data for x in np.asarray(sset.actions[:, :, 1:]).reshape(-1, 3))

    # checkpoints of other networks than config.json says: one line naming the file
    other = tmp_path / "w"
    shutil.copytree(a, other)
    conf = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**conf, "width": 64}))
    for ckpt in (None, "eval_qipo_0002.eqx"):
        with pytest.raises(ConfigError, match="does not match the networks of") as err:
            evaluate_run(other, checkpoint=ckpt)
        msg = str(err.value)
        assert "\n" not in msg and (ckpt or "policy.eqx") in msg and "shape" in msg

    # a rebuilt dataset (another size) is refused on resume
    stats = json.loads((b / "obs_stats.json").read_text())
    assert stats["transitions"] > 0
    stats["transitions"] += 1
    (b / "obs_stats.json").write_text(json.dumps(stats))
    with pytest.raises(ConfigError, match="dataset was rebuilt"):
        train(cfg, b, resume=True, **quiet)


def test_support_stats_are_per_state_with_a_seed_axis():
    """Weights are normalised over each state's M supports, not over states or seeds."""
    from ewfm.rl import support_stats

    q = jnp.array([[[0.0, 0.0, np.log(2.0)], [1.0, 1.0, 1.0]]])  # [seeds, states, M]
    st = support_stats(SupportSet(jnp.zeros((2, 1)), jnp.zeros((1, 2, 3, 1)), q), q, 1.0)
    # state 1: 3 * softmax(0, 0, log 2) = (0.75, 0.75, 1.5); state 2: uniform (1, 1, 1)
    assert st["w_max_mean"] == pytest.approx(1.25) and st["w_data_mean"] == pytest.approx(0.875)
    assert st["q_std_within"] == pytest.approx(np.std([0, 0, np.log(2.0)]) / 2, rel=1e-6)


def test_qgpo_end_to_end_with_two_seeds(tiny_dataset, tmp_path):
    """QGPO's stages run per seed; its guided policy and its plain BC warm-up both evaluate;
    its losses are those the code before the stages refactor wrote (tests/data/legacy); a run
    SIGKILLed inside its CEP stage and resumed equals the uninterrupted run."""
    from ewfm.rl import Policy, evaluate, evaluate_run, train

    over = dict(TINY, dataset=tiny_dataset, method="qgpo", seeds=2, cep_epochs=2, eval_every=0)
    cfg = resolve_config("quick", overrides=dict(over, final_episodes=1, eval_max_steps=10))
    out = train(cfg, tmp_path / "q", progress=False, log=lambda s: None)
    assert out["episodes"] == 2 and len(out["behaviour_seed_scores"]) == 2
    stages = [json.loads(x)["stage"] for x in (tmp_path / "q" / "metrics.jsonl").open()]
    assert stages == ["behaviour", "critic", "critic", "cep", "cep"]
    # the legacy run trained one CEP epoch with these settings; the second continues it
    legacy_close(_losses(tmp_path / "q")[:4], _losses(LEGACY / "rl_qgpo"))

    # killed inside CEP (behaviour and critic reused from the run above), then resumed
    killed = tmp_path / "k"
    assert kill_in_stage(cfg, killed, "cep", reuse=tmp_path / "q") == 1
    assert not (killed / "summary.json").exists()
    train(cfg, killed, resume=True, progress=False, log=lambda s: None)
    _assert_same_run(killed, tmp_path / "q", ("behaviour", "critic", "cep"))
    again = evaluate_run(tmp_path / "q", episodes=1)  # reloads the energy nets too
    assert again["episodes"] == 2 and all(math.isfinite(x) for x in again["scores"])

    # guidance 0 samples the behaviour model alone: the unguided policy on the same seeds
    g0 = evaluate_run(tmp_path / "q", episodes=1, guidance=0.0)
    run = load_run(tmp_path / "q")
    field, energy_net = run.networks()
    assert energy_net is not None and run.q_net() is not None
    plain = Policy(field, None, run.sampler, run.mean, run.std, 3, 0.0)
    ref = evaluate(plain, "Hopper-v5", 2, 12345, key=jr.key(12345), max_episode_steps=10)
    assert g0["guidance"] == 0.0 and g0["scores"] == [float(x) for x in ref.normalized]
    with pytest.raises(ConfigError, match="guidance must be >= 0"):
        evaluate_run(tmp_path / "q", guidance=-1.0)

    # QIPO-Diff on the QGPO run's diffusion model and critic: those stages are not retrained
    diff = dataclasses.replace(
        cfg, method="qipo-diff", qipo_epochs=1, renew_every=1, q_norm="spread"
    )
    d = train(diff, tmp_path / "d", reuse=tmp_path / "q", progress=False, log=lambda s: None)
    hist = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").open()]
    assert [m["stage"] for m in hist] == ["behaviour", "critic", "critic", "qipo"]
    q_hist = [json.loads(x) for x in (tmp_path / "q" / "metrics.jsonl").open()]
    assert hist[:3] == q_hist[:3]  # the copied stages' own records, seconds included
    for name in ("behaviour", "critic"):
        a = (tmp_path / "q" / "checkpoints" / f"{name}.eqx").read_bytes()
        assert (tmp_path / "d" / "checkpoints" / f"{name}.eqx").read_bytes() == a
    assert d["behaviour_seed_scores"] == out["behaviour_seed_scores"]  # same BC, same seeds
    ot = dataclasses.replace(cfg, method="qipo-ot")
    with pytest.raises(ConfigError, match="needs the OT path"):
        train(ot, tmp_path / "e", reuse=tmp_path / "q", progress=False)
    with pytest.raises(ConfigError, match="subset=600 but this run has subset=500"):
        train(dataclasses.replace(diff, subset=500), tmp_path / "f", reuse=tmp_path / "q")
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


# -- runs written before the stages refactor -----------------------------------------------------


@pytest.mark.parametrize("name", ["rl_qipo_ot", "rl_qgpo"])
def test_legacy_run_loads_and_samples_the_same(name):
    """tests/data/legacy/make.py trained these (2 seeds each; QGPO with its energy nets)
    with the code before the stages refactor and sampled their policies."""
    expected = np.load(LEGACY / "expected.npz")
    run = load_run(LEGACY / name)
    assert run.config.method == {"rl_qipo_ot": "qipo-ot", "rl_qgpo": "qgpo"}[name]
    assert run.config.solver == "auto" and run.config.seeds == 2
    actions = run.policy()(expected["rl/obs"], jr.key(11))
    legacy_close(actions, expected[f"{name}/actions"])


# -- seeds, kills and the CLI on the paper preset's data settings ---------------------------------


SMALL = dict(
    steps_per_epoch=100,
    width=32,
    depth=2,
    critic_width=32,
    critic_depth=1,
    bc_epochs=2,
    critic_mc_epochs=1,
    critic_epochs=1,
    qipo_epochs=3,
    renew_every=2,
    support=4,
    critic_support=3,
    qipo_states=8,
    batch_size=64,
    critic_batch=64,
    sample_steps=2,
    qipo_lr=1e-3,
    eval_every=2,
    eval_episodes=1,
    final_episodes=1,
    eval_max_steps=5,
    net="mlp",
    q_norm="state",
    keep_data_action=False,
)


def test_seeds_kills_and_cli_on_the_paper_preset(tiny_dataset, tmp_path):
    """On the paper preset's data settings (``subset = 0``: every run sees every transition):

    - seed 1 of a ``--seeds 2`` run trains what a separate ``--seed 1`` run trains: the raw
      parameters of every stage after 200-400 steps at QIPO learning rate 1e-3, where a
      stream of the wrong seed, or the right start trained on another seed's QIPO stream,
      fails the same comparison;
    - a run SIGKILLed inside its behaviour, critic and QIPO stages (three processes, each
      resuming the last) and finished by ``ewfm train --resume`` equals the uninterrupted run;
    - ``ewfm train`` prints the final score and its BC, ``ewfm evaluate`` re-scores the run;
    - ``keep_data_action = false`` keeps no dataset action among the supports, and
      ``q_norm = state`` standardises each state's Q in the weights.
    """
    from ewfm.rl import StopTraining, evaluate_run, load_transitions, train

    quiet = dict(progress=False, log=lambda s: None)
    over = dict(SMALL, dataset=tiny_dataset)
    cfg = resolve_config("paper", overrides=dict(over, seed=1))
    paper = resolve_config("paper")
    for k in ("subset", "qipo_subset", "beta", "critic_mc_epochs", "guidance"):
        assert getattr(cfg, k) == (over[k] if k in over else getattr(paper, k)), k
    assert (cfg.subset, cfg.qipo_subset, cfg.beta, paper.net) == (0, 0, 3.0, "resnet")

    # the single run, through the CLI
    toml = tmp_path / "small.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in over.items()))
    single = tmp_path / "s"
    res = _cli(["train", "--preset", "paper", "--config", str(toml), "--seed", "1",
                "--out", str(single), "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((single / "summary.json").read_text())
    assert load_run(single).config == cfg
    text = " ".join(res.output.split())
    assert f"{summary['score_mean']:.1f} ± {summary['score_std']:.1f}" in text
    bc = f"{summary['behaviour_score_mean']:.1f} ± {summary['behaviour_score_std']:.1f}"
    assert f"its behaviour model (BC): {bc}" in text
    res = _cli(["evaluate", str(single), "--episodes", "1", "--seed", "7"])
    ev = evaluate_run(single, episodes=1, seed=7)
    assert res.exit_code == 0 and ev["episodes"] == 1, res.output
    assert f"normalised score {ev['score_mean']:.1f} ± {ev['score_std']:.1f}" in res.output

    # seed 1 of the pair is the single run; seed 0 is not
    train(dataclasses.replace(cfg, seed=0, seeds=2), tmp_path / "p", **quiet)
    pair, one = _trained(tmp_path / "p"), _trained(single)
    _trains_like(pair, 1, one)
    with pytest.raises(AssertionError):
        _trains_like(pair, 0, one)
    # the single run's behaviour model and critic trained further on seed 2's QIPO stream
    wrong = tmp_path / "n"
    with pytest.raises(StopTraining):
        train(dataclasses.replace(cfg, seed=2), wrong, stop_after=("behaviour", 1), **quiet)
    for name in ("behaviour", "critic", "critic_supports"):
        shutil.copyfile(
            single / "checkpoints" / f"{name}.eqx", wrong / "checkpoints" / f"{name}.eqx"
        )
    train(dataclasses.replace(cfg, seed=2), wrong, resume=True, **quiet)
    other = _trained(wrong)
    _trains_like({k: other[k] for k in ("behaviour", "critic")}, 0, one)  # the same start
    with pytest.raises(AssertionError, match="qipo"):
        _trains_like({"qipo": other["qipo"]}, 0, one)

    # keep_data_action = false: no support is a dataset action (with true the first is; see
    # the two-seed test); every state of the dataset carries supports (qipo_subset = 0)
    sset = load_run(single).support_set()
    data_actions = np.asarray(load_transitions(cfg.dataset).actions, np.float32)
    assert sset.actions.shape[1] == len(data_actions)
    assert not np.any(np.all(np.asarray(sset.actions[0]) == data_actions[:, None], axis=-1))
    # q_norm = state: the weights' statistics at the last renewal are those of Q standardised
    # per state (computed here in float64); under none or spread they differ
    q = np.asarray(sset.q[0], np.float64)

    def w_max(qw):
        w = np.exp(cfg.beta * (qw - qw.max(-1, keepdims=True)))
        return float((q.shape[-1] * w / w.sum(-1, keepdims=True)).max(-1).mean())

    centred = q - q.mean(-1, keepdims=True)
    got = [m for m in _strip(single) if "w_max_mean" in m][-1]["w_max_mean"]
    assert got == pytest.approx(w_max(centred / q.std(-1, keepdims=True)), rel=1e-4)
    for wrong_w in (w_max(q), w_max(centred / q.std(-1).mean())):
        assert abs(got - wrong_w) > 1e-2 * got

    # killed inside each stage, then resumed through the CLI: the uninterrupted run
    killed, cache = tmp_path / "k", tmp_path / "jax-cache"
    for stage in ("behaviour", "critic", "qipo"):
        assert kill_in_stage(cfg, killed, stage, cache=cache) == 1
        assert not (killed / "summary.json").exists()
    res = _cli(["train", "--out", str(killed), "--resume", "--quiet"])
    assert res.exit_code == 0 and "(resumed)" in res.output, res.output
    _assert_same_run(killed, single, ("behaviour", "critic", "qipo"))


def test_paper_preset_trains_the_resnet(tiny_dataset, tmp_path):
    """The paper preset's network is QGPO's residual field, of the size its help states; a
    one-epoch BC run with it trains, saves and reloads."""
    from ewfm.rl import train

    cfg = resolve_config(
        "paper",
        overrides=dict(
            dataset=tiny_dataset, method="bc", bc_epochs=1, steps_per_epoch=3, batch_size=32,
            eval_every=0, final_episodes=1, eval_max_steps=5,
        ),
    )  # fmt: skip
    assert cfg.net == "resnet"
    out = train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    assert math.isfinite(out["score_mean"])
    field, _ = load_run(tmp_path / "r").networks()
    assert isinstance(field, ewfm.ResidualMLPField)
    n = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(field, eqx.is_array)))
    shown = " ".join(_cli(["train", "--help"]).output.replace("│", " ").split())
    assert f"ResidualMLPField, {n / 1e6:.1f}M parameters" in shown, n
