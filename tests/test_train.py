"""The fit loop: an end-to-end EFM fit against the closed-form target, EMA, checkpoints,
data parallelism."""

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import ewfm


def test_efm_fit_samples_the_closed_form_tilted_gaussian():
    # p = N(0, I_2), E(x) = ||x - c||^2 / 2, beta = 1  =>  pi = N(c / 2, I / 2) (the tilted
    # Gaussian of docs/method.md, "Closed forms used by the checks").
    # Tolerance 0.1 on mean and covariance entries: 5 standard errors of (a) 4,000 model
    # samples (0.011 on the mean, 0.016 on the variance) and (b) the weighted training set
    # (8,192 points, effective size ~3,000 after weighting: ~0.013 on the mean).
    c = jnp.array([2.0, 0.0])
    x0 = jr.normal(jr.PRNGKey(0), (8192, 2))
    energy = 0.5 * jnp.sum((x0 - c) ** 2, axis=1)
    path = ewfm.OTPath()
    field = ewfm.MLPField(2, width=64, depth=2, key=jr.PRNGKey(1))

    def loss(model, batch, key):
        x, e = batch
        return ewfm.efm_loss(model, path, x, e, 1.0, key)

    res = ewfm.fit(
        field,
        loss,
        (x0, energy),
        key=jr.PRNGKey(2),
        optimizer=optax.adam(3e-3),
        epochs=8,
        steps_per_epoch=150,
        batch_size=512,
        ema_decay=0.99,
    )
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    xs = ewfm.sample(res.state.ema, path, jr.PRNGKey(3), (4000, 2), solver="heun", steps=20).x
    mean, cov = jnp.mean(xs, 0), jnp.cov(xs.T)
    assert jnp.allclose(mean, c / 2, atol=0.1), mean
    assert jnp.allclose(cov, 0.5 * jnp.eye(2), atol=0.1), cov


def test_ema_is_polyak_average_and_epoch_is_one_pass():
    # loss = ||w - target||^2 with SGD: every step is known in closed form
    target = jnp.array([1.0, -1.0])
    model = jnp.zeros(2)
    data = jnp.zeros((12, 1))

    def loss(w, batch, key):
        return jnp.sum((w - target) ** 2) + 0.0 * jnp.sum(batch)

    lr, decay = 0.1, 0.5
    res = ewfm.fit(
        model,
        loss,
        data,
        key=jr.PRNGKey(0),
        optimizer=optax.sgd(lr),
        epochs=2,
        batch_size=4,
        ema_decay=decay,
    )
    w, ema = np.zeros(2), np.zeros(2)
    for _ in range(6):  # 12 samples / batch 4 = 3 steps per epoch, 2 epochs
        w = w - lr * 2 * (w - np.asarray(target))
        ema = decay * ema + (1 - decay) * w
    assert int(res.state.step) == 6
    assert np.allclose(res.state.model, w, atol=1e-6) and np.allclose(res.state.ema, ema, atol=1e-6)


def test_unrolled_epoch_matches_the_scanned_one():
    # unroll only changes how XLA compiles the epoch (straight-line code), not what it computes
    data = jr.normal(jr.PRNGKey(1), (32, 3))

    def loss(w, batch, key):
        return jnp.mean((batch @ w - jr.normal(key, (batch.shape[0],))) ** 2)

    runs = [
        ewfm.fit(
            jnp.ones(3),
            loss,
            data,
            key=jr.PRNGKey(0),
            epochs=2,
            batch_size=8,
            steps_per_epoch=3,
            unroll=u,
        )
        for u in (1, True)
    ]
    assert [h["loss"] for h in runs[0].history] == pytest.approx(
        [h["loss"] for h in runs[1].history], rel=1e-6
    )
    np.testing.assert_allclose(runs[0].state.ema, runs[1].state.ema, rtol=1e-6)


def test_checkpoint_roundtrip_is_atomic(tmp_path, monkeypatch):
    field = ewfm.MLPField(3, cond_dim=2, width=16, depth=1, key=jr.PRNGKey(0))
    ck = tmp_path / "ck" / "model.eqx"
    ewfm.save_checkpoint(ck, field, {"epoch": 3})
    like = ewfm.MLPField(3, cond_dim=2, width=16, depth=1, key=jr.PRNGKey(9))
    back, meta = ewfm.load_checkpoint(ck, like)
    assert meta == {"epoch": 3}
    assert eqx.tree_equal(eqx.filter(back, eqx.is_array), eqx.filter(field, eqx.is_array))
    assert sorted(p.name for p in ck.parent.iterdir()) == ["model.eqx"]  # no temp files left

    class Interrupted(Exception):
        pass

    def half_write(f, tree):  # write some bytes, then die mid-save
        f.write(b"partial")
        raise Interrupted

    monkeypatch.setattr(eqx, "tree_serialise_leaves", half_write)
    with pytest.raises(Interrupted):
        ewfm.save_checkpoint(ck, field, {"epoch": 4})
    monkeypatch.undo()
    assert ewfm.load_checkpoint(ck, like)[1] == {"epoch": 3}
    assert sorted(p.name for p in ck.parent.iterdir()) == ["model.eqx"]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ewfm.load_checkpoint(tmp_path / "missing.eqx", like)


def test_nan_loss_stops_with_a_clear_error():
    def loss(w, batch, key):
        return jnp.sum(w) * jnp.nan

    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        ewfm.fit(jnp.ones(2), loss, jnp.zeros((4, 1)), key=jr.PRNGKey(0), epochs=1, batch_size=2)


def test_bad_fit_arguments():
    with pytest.raises(ValueError, match="batch_size 64 exceeds the 10 samples"):
        ewfm.fit(
            jnp.ones(2),
            lambda w, b, k: jnp.sum(w**2),
            jnp.zeros((10, 1)),
            key=jr.PRNGKey(0),
            epochs=1,
            batch_size=64,
        )
    with pytest.raises(ValueError, match="ema_decay"):
        ewfm.fit(
            jnp.ones(2),
            lambda w, b, k: jnp.sum(w**2),
            jnp.zeros((10, 1)),
            key=jr.PRNGKey(0),
            epochs=1,
            batch_size=2,
            ema_decay=1.5,
        )


_DP_SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, jax.random as jr, optax, ewfm
    batch_shards = []  # the sharding XLA gives each training batch, seen from inside the loss
    x0 = jr.normal(jr.PRNGKey(0), (512, 2))
    field = ewfm.MLPField(2, width=32, depth=2, key=jr.PRNGKey(1))
    path = ewfm.OTPath()

    def loss(m, b, k):
        jax.debug.inspect_array_sharding(b, callback=batch_shards.append)
        return ewfm.efm_loss(m, path, b, b[:, 0], 1.0, k)

    res = ewfm.fit(field, loss, x0, key=jr.PRNGKey(2), optimizer=optax.adam(1e-3),
                   epochs=3, batch_size=64)
    state = [x for x in jax.tree.leaves(res.state) if isinstance(x, jax.Array)]
    shards = [list(s.shard_shape((64, 2))) for s in batch_shards]
    devices = [len(s.device_set) for s in batch_shards]
    try:
        ewfm.fit(field, loss, x0, key=jr.PRNGKey(2), epochs=1, batch_size=63)
        odd = None
    except ValueError as e:
        odd = str(e)
    print(json.dumps({
        "devices": len(jax.devices()),
        "losses": [h["loss"] for h in res.history],
        "batch_shards": shards,
        "batch_devices": devices,
        "state_devices": sorted({len(x.sharding.device_set) for x in state}),
        "state_replicated": all(x.sharding.is_fully_replicated for x in state),
        "odd_batch": odd,
    }))
    """
)


def _run(devices):
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-c", _DP_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_data_parallel_fit_shards_the_batch_and_matches_single_device():
    one, two = _run(1), _run(2)
    assert one["devices"] == 1 and two["devices"] == 2
    # two devices: each batch of 64 is split in halves of 32 rows, one per device, ...
    assert two["batch_shards"] == [[32, 2]] and two["batch_devices"] == [2], two
    # ... while the parameters, optimiser state and EMA are replicated on both
    assert two["state_devices"] == [2] and two["state_replicated"], two
    assert one["batch_shards"] == [[64, 2]] and one["state_devices"] == [1], one
    # the same training, up to float rounding of the sharded reductions
    assert np.allclose(one["losses"], two["losses"], rtol=1e-5), (one, two)
    # a batch that does not split evenly over the devices is refused before training
    assert two["odd_batch"] == (
        "batch_size 63 must be divisible by the 2 devices for data-parallel training; "
        "change batch_size."
    )
    assert one["odd_batch"] is None  # one device takes any batch size
