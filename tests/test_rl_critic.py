"""The critics of `ewfm train`: IQL's expectile loss by hand, reward scaling (recorded and
applied once), each critic's ranking of a small finite MDP's actions against the truth
computed by value iteration here, and their settings refused in one line."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import TINY_RL

import ewfm
from ewfm.rl import (
    ConfigError,
    CriticBatch,
    TransitionBatch,
    Transitions,
    WarmBatch,
    critic_loss,
    discounted_returns,
    expectile_loss,
    iql_loss,
    load_run,
    load_transitions,
    make_critic,
    q_values,
    read_config,
    resolve_config,
    reward_factor,
    seed_slice,
    soft_target_optimizer,
    value_warm_loss,
)

# -- losses by hand ------------------------------------------------------------------------------


def test_expectile_loss_hand_computed():
    diff = jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    got = np.asarray(expectile_loss(diff, 0.7))
    # |0.7 - 1(d < 0)| d^2: 0.3 * 4, 0.3 * 0.25, 0, 0.7 * 1, 0.7 * 9
    np.testing.assert_allclose(got, [1.2, 0.075, 0.0, 0.7, 6.3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(expectile_loss(diff, 0.5)), 0.5 * diff**2)
    # its minimiser over a constant is the expectile (the loss is convex in v): for x = (0, 1)
    # at 0.7 the slope 2 * 0.3 * 0.7 - 2 * 0.7 * 0.3 vanishes at v = 0.7; for x = (0, 0, 3) at
    # 0.8, 2 * 2 * 0.2 * v = 2 * 0.8 * (3 - v) at v = 2
    for x, tau, want in (([0.0, 1.0], 0.7, 0.7), ([0.0, 0.0, 3.0], 0.8, 2.0)):
        mean = lambda v, x=x, tau=tau: jnp.mean(expectile_loss(jnp.array(x) - v, tau))
        slope = jax.grad(mean)
        assert abs(float(slope(jnp.float32(want)))) < 1e-6
        assert float(slope(jnp.float32(want - 0.01))) < 0 < float(slope(jnp.float32(want + 0.01)))


def _transitions(k, b, obs, act):
    ks = jr.split(k, 5)
    return (
        jr.normal(ks[0], (b, obs)),
        jr.normal(ks[1], (b, act)),
        jr.normal(ks[2], (b,)),
        jr.normal(ks[3], (b, obs)),
        jnp.array([0.0, 1.0, 0.0, 0.0]),
    )


def test_iql_and_warm_losses_match_a_loop():
    """`iql_loss`: expectile V on the target's min Q plus Q on r + gamma V(s'); the V warm
    start: V on the returns plus Q on r + gamma V(s'). Neither trains the target."""
    k = jr.split(jr.key(0), 4)
    critic = make_critic(3, 2, width=16, depth=2, key=k[0], value=True, layer_norm=True)
    other = make_critic(3, 2, width=16, depth=2, key=k[1]).q
    critic = eqx.tree_at(lambda c: c.target, critic, other)
    assert critic.v is not None and critic.q.norms is not None
    tb = TransitionBatch(*_transitions(k[2], 4, 3, 2))
    wb = WarmBatch(*tb, jr.normal(k[3], (4,)))
    gamma, tau = 0.9, 0.7
    pairs = eqx.filter_jit(lambda net, *x: jax.vmap(net)(*x))  # the nets on each row alone
    v_s, v_ns = (np.asarray(pairs(critic.v, x)) for x in (tb[0], tb[3]))
    q, q_t = (np.asarray(pairs(net, tb[0], tb[1])) for net in (critic.q, other))  # [4, 2]
    iql, warm = 0.0, 0.0
    for i in range(4):
        r, d = float(tb[2][i]), float(tb[4][i])
        y = r + gamma * (1 - d) * v_ns[i]
        td = float(np.sum((q[i] - y) ** 2))
        u = float(np.min(q_t[i])) - v_s[i]
        iql += (tau if u > 0 else 1 - tau) * u**2 + td
        warm += (v_s[i] - float(wb.returns[i])) ** 2 + td
    for loss, batch, want in (
        (lambda c, b: iql_loss(c, b, k[0], gamma=gamma, expectile=tau), tb, iql),
        (lambda c, b: value_warm_loss(c, b, k[0], gamma=gamma), wb, warm),
    ):
        got, grads = eqx.filter_jit(eqx.filter_value_and_grad(loss))(critic, batch)
        np.testing.assert_allclose(float(got), want / 4, rtol=1e-5)
        leaves = jax.tree_util.tree_leaves(eqx.filter(grads.target, eqx.is_array))
        assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in leaves)
        assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads.v))


def test_soft_target_optimizer_trains_v_and_leaves_the_q_only_state_as_it_was():
    """With a V network the optimiser trains Q and V and moves the target; without one its
    state is Adam's state of Q alone (the structure older checkpoints hold)."""
    opt = soft_target_optimizer(optax.adam(1e-2), 0.5)
    plain = make_critic(3, 2, width=8, depth=1, key=jr.key(0))
    params = eqx.filter(plain, eqx.is_inexact_array)
    same = optax.adam(1e-2).init(eqx.filter(plain.q, eqx.is_inexact_array))
    assert jax.tree_util.tree_structure(opt.init(params)) == jax.tree_util.tree_structure(same)
    critic = make_critic(3, 2, width=8, depth=1, key=jr.key(0), value=True)
    tb = TransitionBatch(*_transitions(jr.key(1), 4, 3, 2))

    @eqx.filter_jit
    def step(c, state):
        grads = eqx.filter_grad(lambda m: iql_loss(m, tb, jr.key(0), gamma=0.9, expectile=0.7))(c)
        upd, state = opt.update(grads, state, eqx.filter(c, eqx.is_inexact_array))
        return eqx.apply_updates(c, upd)

    new = step(critic, opt.init(eqx.filter(critic, eqx.is_inexact_array)))
    for part in (lambda c: c.v.net.layers[0].weight, lambda c: c.q.nets.layers[0].weight):
        assert not np.allclose(np.asarray(part(new)), np.asarray(part(critic)))
    # the target moved half way toward Q before Q's update; Q and target start equal
    np.testing.assert_array_equal(
        np.asarray(new.target.nets.layers[0].weight), np.asarray(critic.q.nets.layers[0].weight)
    )


# -- a small finite MDP with known values -----------------------------------------------------

# 4 states (one-hot observations), 3 actions embedded as a = -1, 0, 1; deterministic
# transitions, no terminal. Chosen (by a search over small tables) so that every state's
# actions differ by >= 0.4 under both the optimal and the uniform policy, the two rank
# two states' actions differently, and Q* ranks two states' actions unlike their rewards
# (a myopic critic fails).
NEXT = np.array([[1, 3, 1], [0, 2, 1], [3, 2, 2], [3, 2, 1]])
REWARD = np.array([[0.0, 0.5, 1.0], [1.5, 0.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.5]])
ACTIONS = np.array([-1.0, 0.0, 1.0])
GAMMA = 0.8


def _values(backup):
    """Q by value iteration with ``backup(Q[s']) -> V(s')`` (max: Q*, mean: Q of uniform)."""
    q = np.zeros_like(REWARD)
    for _ in range(2000):
        q = REWARD + GAMMA * backup(q[NEXT])
    return q


def _mdp_data(copies=32):
    s, a = np.meshgrid(np.arange(4), np.arange(3), indexing="ij")
    s, a = np.tile(s.ravel(), copies), np.tile(a.ravel(), copies)
    eye = np.eye(4, dtype=np.float32)
    return TransitionBatch(
        jnp.asarray(eye[s]),
        jnp.asarray(ACTIONS[a, None], jnp.float32),
        jnp.asarray(REWARD[s, a], jnp.float32),
        jnp.asarray(eye[NEXT[s, a]]),
        jnp.zeros(len(s), jnp.float32),
    )


def _train(loss, critic, data, steps=3000):
    opt = soft_target_optimizer(optax.adam(1e-3), 0.02)
    state = ewfm.init_state(critic, opt)
    epoch = ewfm.make_epoch(loss, opt, batch_size=128, steps=steps, ema_decay=0.0)
    state, losses = epoch(state, data, jr.key(1))
    states = jnp.eye(4)
    actions = jnp.broadcast_to(jnp.asarray(ACTIONS)[None, :, None], (4, 3, 1))
    return np.asarray(q_values(state.model.q, states, actions)), np.asarray(losses)


def _check_ranks(q, truth):
    gaps = np.diff(np.sort(truth, axis=1), axis=1)
    assert gaps.min() >= 0.4, gaps  # the truth ranks every state's actions clearly
    np.testing.assert_array_equal(np.argsort(q, axis=1), np.argsort(truth, axis=1))
    assert np.abs(q - truth).max() < 0.2 * np.ptp(truth), (q, truth)


def test_iql_at_expectile_one_half_ranks_like_the_behaviour_policys_q():
    """At expectile 0.5, V is the mean of Q over the data's (uniform) actions: IQL learns
    Q of the uniform data policy, Q = R + gamma mean_a' Q(s', a')."""
    truth = _values(lambda qn: qn.mean(-1))
    critic = make_critic(4, 1, width=64, depth=2, key=jr.key(0), value=True)
    loss = lambda c, b, k: iql_loss(c, b, k, gamma=GAMMA, expectile=0.5)
    q, _ = _train(loss, critic, _mdp_data())  # V's loss keeps the spread of Q over actions
    _check_ranks(q, truth)
    assert not np.array_equal(np.argsort(truth), np.argsort(_values(lambda qn: qn.max(-1))))
    assert not np.array_equal(np.argsort(truth), np.argsort(REWARD))


def test_in_support_with_every_action_and_a_large_beta_ranks_like_q_star():
    """With every action as the next state's supports and a large beta_Q, the in-support
    target is the Bellman optimality backup: the critic learns Q*."""
    truth = _values(lambda qn: qn.max(-1))
    data = _mdp_data()
    sup = jnp.broadcast_to(jnp.asarray(ACTIONS, jnp.float32)[None, :, None], (len(data[0]), 3, 1))
    batch = CriticBatch(*data, sup)
    critic = make_critic(4, 1, width=64, depth=2, key=jr.key(0))
    loss = lambda c, b, k: critic_loss(c, b, k, gamma=GAMMA, beta_q=50.0)
    q, losses = _train(loss, critic, batch)
    assert losses[-100:].mean() < 0.01 * losses[:100].mean()
    _check_ranks(q, truth)
    assert not np.array_equal(np.argsort(truth), np.argsort(REWARD))


# -- reward scaling ----------------------------------------------------------------------------


def test_reward_factor_is_1000_over_the_spread_of_complete_episode_returns():
    r = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], np.float32)
    term = np.array([0, 1, 1, 0, 0, 0, 0], np.float32)  # episodes 0-1 and 2 terminate
    tout = np.array([0, 0, 0, 0, 0, 1, 0], np.float32)  # 3-5 hits the time limit; 6 is cut
    z = np.zeros((7, 1), np.float32)
    t = Transitions(z, z, r, z, term, tout)
    # complete episodes return 3, 3 and 15 (the cut one is left out): 1000 / 12
    assert reward_factor(t, "returns") == pytest.approx(1000.0 / 12.0, rel=1e-12)
    assert reward_factor(t, "none") == 1.0
    ends = np.array([0, 1, 0, 1, 0, 1, 0], np.float32)  # three 2-step episodes, each 2
    with pytest.raises(ConfigError, match="use reward_scale none"):
        reward_factor(Transitions(z, z, np.ones(7, np.float32), z, ends, 0 * ends), "returns")


def _by_hand_factor(tr):
    """1000 / (max - min) of the complete episodes' returns, by a loop."""
    rets, acc = [], 0.0
    for r, d, t in zip(tr.rewards, tr.terminals, tr.timeouts, strict=True):
        acc += float(r)
        if d or t:
            rets.append(acc)
            acc = 0.0
    return 1000.0 / (max(rets) - min(rets))


def test_reward_scale_is_recorded_and_applied_once(tiny_dataset, tmp_path):
    """A run records ``reward_scale`` in config.json and its factor in obs_stats.json; with
    the critic frozen (learning rate 0), its warm-start loss is the one of rewards scaled
    once by that factor (computed here from the episodes), not of raw or twice-scaled ones."""
    from ewfm.rl import StopTraining, train

    over = dict(
        TINY_RL, dataset=tiny_dataset, critic="iql", subset=0, critic_lr=0.0, critic_batch=256,
        steps_per_epoch=100, critic_epochs=0, critic_mc_epochs=1, bc_epochs=0,
    )  # fmt: skip
    cfg = resolve_config("quick", overrides=over)
    assert (cfg.reward_scale, cfg.critic_warm_start) == ("returns", "v")  # the defaults
    out = tmp_path / "r"
    with pytest.raises(StopTraining):
        train(cfg, out, progress=False, log=lambda s: None, stop_after=("critic", 1))
    assert json.loads((out / "config.json").read_text())["reward_scale"] == "returns"
    tr = load_transitions(tiny_dataset)
    f = _by_hand_factor(tr)
    stats = json.loads((out / "obs_stats.json").read_text())
    assert stats["reward_scale"] == pytest.approx(f, rel=1e-12)

    # the frozen critic's expected warm-start loss over the data, for rewards scaled k times
    critic = seed_slice(load_run(out).load("critic")[0].model, 0)
    mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))
    s = jnp.asarray((np.asarray(tr.observations, np.float32) - mean) / std)
    ns = jnp.asarray((np.asarray(tr.next_observations, np.float32) - mean) / std)
    a, d = jnp.asarray(tr.actions, jnp.float32), jnp.asarray(tr.terminals, jnp.float32)

    warm_loss = eqx.filter_jit(lambda c, b: value_warm_loss(c, b, jr.key(0), gamma=cfg.gamma))

    def expected(times):
        r = np.asarray(tr.rewards, np.float64) * f**times
        g = discounted_returns(r, tr.terminals, tr.timeouts, cfg.gamma)
        b = WarmBatch(s, a, jnp.asarray(r, jnp.float32), ns, d, jnp.asarray(g, jnp.float32))
        return float(warm_loss(critic, b))

    got = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert got["stage"] == "critic" and got["phase"] == "warm"
    # 100 batches of 256 of the 1,500 transitions: the epoch's mean is within a few % of the
    # data's mean (measured: 0.14%; raw rewards give 15 times less, f^2 with f = 3.9 here)
    assert got["loss"] == pytest.approx(expected(1), rel=0.02)
    assert abs(f - 1.0) > 0.2, f  # else once, never and twice could not be told apart
    for times in (0, 2):
        assert got["loss"] != pytest.approx(expected(times), rel=0.15), times


def test_an_iql_run_with_layer_norm_trains_qipo_and_reads_back(tiny_dataset, tmp_path):
    """critic = iql through `train`: the V warm start, then IQL; QIPO scores its supports
    with the run's twin Q (LayerNorms included), and `load_run` reads the critic back."""
    from ewfm.rl import train

    over = dict(TINY_RL, dataset=tiny_dataset, critic="iql", critic_layer_norm=True)
    cfg = resolve_config("quick", overrides=dict(over, expectile=0.9))
    out = train(cfg, tmp_path / "r", progress=False, log=lambda s: None)
    assert np.isfinite(out["score_mean"])
    hist = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").open()]
    assert [(m["stage"], m.get("phase")) for m in hist[:3]] == [
        ("behaviour", None), ("critic", "warm"), ("critic", "td"),
    ]  # fmt: skip
    run = load_run(tmp_path / "r")
    critic = seed_slice(run.load("critic")[0].model, 0)
    assert critic.v is not None and critic.q.norms is not None
    q = seed_slice(run.q_net(), 0)
    sset = run.support_set()
    np.testing.assert_allclose(
        np.asarray(sset.q[0]),
        np.asarray(eqx.filter_jit(q_values)(q, sset.states, sset.actions[0])),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip


# -- bad input -------------------------------------------------------------------------------


def test_critic_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown critic 'sarsa'; choose one of in-support, iql"):
        resolve_config(overrides={"critic": "sarsa"})
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides={"expectile": 0.9})
    msg = str(err.value)
    assert "expectile is a setting of the iql critic" in msg and "critic in-support" in msg
    assert "\n" not in msg
    assert resolve_config(overrides={"critic": "iql", "expectile": 0.9}).expectile == 0.9
    assert resolve_config(overrides={"expectile": 0.7}).critic == "in-support"  # the default
    with pytest.raises(ConfigError, match=r"expectile must lie in \(0, 1\)"):
        resolve_config(overrides={"critic": "iql", "expectile": 1.0})
    with pytest.raises(ConfigError, match="use critic_warm_start v with iql"):
        resolve_config(overrides={"critic": "iql", "critic_warm_start": "q"})
    with pytest.raises(ConfigError, match="unknown reward_scale 'max'; choose one of none"):
        resolve_config(overrides={"reward_scale": "max"})
    # a run directory from before these settings reads back as it trained
    old = dataclasses.asdict(resolve_config())
    del old["reward_scale"], old["critic_warm_start"]
    assert (read_config(old).reward_scale, read_config(old).critic_warm_start) == ("none", "q")
    paper = resolve_config("paper")
    assert (paper.critic, paper.critic_epochs * paper.steps_per_epoch) == ("in-support", 500_000)
