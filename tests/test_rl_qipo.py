"""QIPO's trust in its critic (``q_trust``): the reliability of a critic's within-state
ranking estimated from its twin heads, against its closed form, and applied in a run."""

import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import TINY_RL

from ewfm.rl import ranking_reliability, resolve_config


def _heads(key, n, m, noise, offsets=0.0):
    """Two heads = the same within-state truth (variance 1) + independent errors
    (variance ``noise**2``) + an offset per state."""
    kt, k1, k2, ko = jr.split(key, 4)
    truth = jr.normal(kt, (n, m))
    off = offsets * jr.normal(ko, (n, 1))
    e1, e2 = noise * jr.normal(k1, (n, m)), noise * jr.normal(k2, (n, m))
    return jnp.stack([truth + e1 + off, truth + e2 + off], axis=-1)


@pytest.mark.parametrize("noise", [0.5, 1.0, 2.0])
def test_reliability_matches_its_closed_form(noise):
    """One head's reliability is r = 1 / (1 + noise^2); two heads: R = 2r / (1 + r)."""
    n, m = 20_000, 16
    got = float(ranking_reliability(_heads(jr.key(0), n, m, noise)))
    r = 1.0 / (1.0 + noise**2)
    want = 2 * r / (1 + r)
    # the pooled correlation's standard error is about (1 - r^2) / sqrt(n (m - 1)); R moves
    # by dR/dr = 2 / (1 + r)^2 times that
    se = (1 - r**2) / np.sqrt(n * (m - 1)) * 2 / (1 + r) ** 2
    assert abs(got - want) < 4 * se, (got, want, se)


def test_reliability_invariants():
    h = _heads(jr.key(1), 500, 8, 0.3)
    same = jnp.stack([h[..., 0], h[..., 0]], axis=-1)
    assert float(ranking_reliability(same)) == pytest.approx(1.0, abs=1e-6)
    # per-state offsets (the critic's state values) do not count: only within-state ranking
    shifted = _heads(jr.key(1), 500, 8, 0.3, offsets=100.0)
    assert float(ranking_reliability(shifted)) == pytest.approx(
        float(ranking_reliability(h)), rel=1e-4
    )
    # unrelated heads: clipped at 0 however the sample correlation falls
    noise = jr.normal(jr.key(2), (500, 8, 2))
    assert 0.0 <= float(ranking_reliability(noise)) < 0.05
    # a leading seed axis gives one value per seed
    both = jnp.stack([same, noise])
    rel = np.asarray(ranking_reliability(both))
    assert rel.shape == (2,) and rel[0] == pytest.approx(1.0, abs=1e-6) and rel[1] < 0.05


TINY = dict(TINY_RL, qipo_epochs=2, eval_max_steps=5)


def test_twins_trust_shrinks_beta_by_the_recorded_reliability(tiny_dataset, tmp_path):
    """With ``q_trust = twins`` each renewal records every seed's reliability, and the weights
    are those of beta x reliability on the scaled Q (recomputed here from the saved supports
    and the critic's two heads)."""
    from ewfm.rl import head_values, load_run, scale_q, seed_slice, train

    cfg = resolve_config(
        "quick", overrides=dict(TINY, dataset=tiny_dataset, seeds=2, q_trust="twins", beta=3.0)
    )
    train(cfg, tmp_path / "t", progress=False, log=lambda s: None)
    hist = [json.loads(x) for x in (tmp_path / "t" / "metrics.jsonl").open()]
    renewals = [m for m in hist if "q_trust" in m]
    assert len(renewals) == 2 and all(len(m["q_trust"]) == 2 for m in renewals)
    run = load_run(tmp_path / "t")
    sset, qnet = run.support_set(), run.q_net()
    rel = []
    for j in range(2):
        heads = np.asarray(head_values(seed_slice(qnet, j), sset.states, sset.actions[j]))
        np.testing.assert_allclose(heads.min(-1), sset.q[j], rtol=1e-5, atol=1e-5)
        c = heads - heads.mean(axis=1, keepdims=True)
        r = (c[..., 0] * c[..., 1]).sum() / np.sqrt((c[..., 0] ** 2).sum() * (c[..., 1] ** 2).sum())
        rel.append(np.clip(2 * r / (1 + max(r, 0.0)), 0.0, 1.0))
    np.testing.assert_allclose(renewals[-1]["q_trust"], rel, rtol=1e-4, atol=1e-6)
    qs = np.asarray(scale_q(sset.q, cfg.q_norm)) * np.asarray(rel)[:, None, None]
    w = np.exp(cfg.beta * (qs - qs.max(-1, keepdims=True)))
    w = 4 * w / w.sum(-1, keepdims=True)
    assert renewals[-1]["w_max_mean"] == pytest.approx(float(w.max(-1).mean()), rel=1e-4)


def test_q_trust_choices_are_checked():
    from ewfm.rl import ConfigError

    with pytest.raises(ConfigError, match="unknown q_trust 'twin'; choose one of full, twins"):
        resolve_config(overrides={"q_trust": "twin"})
