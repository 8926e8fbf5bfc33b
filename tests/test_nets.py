import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import ewfm

K = jr.PRNGKey(0)


def n_params(m):
    return sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array)))


def test_fourier_embedding_is_fixed_and_bounded():
    emb = ewfm.FourierTimeEmbedding(32, 30.0, key=K)
    out = emb(0.3)
    assert out.shape == (32,) and jnp.allclose(out[:16] ** 2 + out[16:] ** 2, 1.0)
    g = jax.grad(lambda e: jnp.sum(e(0.3)))(emb)
    assert jnp.all(g.weights == 0)  # not trained
    with pytest.raises(ValueError, match="even"):
        ewfm.FourierTimeEmbedding(7, key=K)


def test_mlp_field_inputs():
    f = ewfm.MLPField(6, cond_dim=17, beta_input=True, width=32, depth=2, key=K)
    x, s = jnp.ones(6), jnp.ones(17)
    out = f(x, 0.5, s, beta=2.0)
    assert out.shape == (6,)
    assert not jnp.allclose(out, f(x, 0.5, s, beta=0.0))  # beta is an input
    assert not jnp.allclose(out, f(x, 0.5, s * 2, beta=2.0))  # so is the condition
    with pytest.raises(ValueError, match="beta"):
        f(x, 0.5, s)
    with pytest.raises(ValueError, match="condition"):
        f(x, 0.5, None, beta=1.0)
    partial = eqx.Partial(f, beta=2.0)  # Algorithm 6: a fixed-beta field for losses/samplers
    assert jnp.allclose(partial(x, 0.5, s), out)


def test_residual_field_is_qgpo_sized():
    f = ewfm.ResidualMLPField(6, cond_dim=17, key=K)
    assert 1.4e6 < n_params(f) < 1.8e6  # QGPO's score network has 1.63M parameters
    assert eqx.filter_jit(f)(jnp.ones(6), 0.1, jnp.ones(17)).shape == (6,)


def test_twin_q_nets_are_independent():
    q = ewfm.TwinQ(3, 2, width=16, depth=2, key=K)
    s, a = jnp.ones(3), jnp.ones(2)
    v = q(s, a)
    assert v.shape == (2,) and v[0] != v[1]
    assert q.min(s, a) == jnp.min(v)
    params, static = eqx.partition(q, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves(params)
    # every parameter array holds the two nets on its leading axis, initialised apart
    assert leaves and all(x.shape[0] == 2 for x in leaves)
    assert not any(jnp.allclose(x[0], x[1]) for x in leaves)
    # Q_k depends on the k-th half of every parameter array, on nothing of the other's
    for k in (0, 1):
        g = jax.tree_util.tree_leaves(eqx.filter_grad(lambda m, k=k: m(s, a)[k])(q))
        assert all(jnp.all(x[1 - k] == 0) for x in g)
        assert all(jnp.any(x[k] != 0) for x in g[-2:])  # (the output layer's w and b)
    # changing net 1 changes Q_1 and leaves Q_0 bit for bit, at any input
    bumped = eqx.combine(jax.tree_util.tree_map(lambda x: x.at[1].add(0.3), params), static)
    xs = jr.normal(jr.PRNGKey(1), (8, 5))
    before = jax.vmap(lambda x: q(x[:3], x[3:]))(xs)
    after = jax.vmap(lambda x: bumped(x[:3], x[3:]))(xs)
    assert jnp.array_equal(before[:, 0], after[:, 0])
    assert not jnp.allclose(before[:, 1], after[:, 1])


def test_energy_net_scalar_and_differentiable():
    e = ewfm.EnergyNet(2, cond_dim=3, width=16, depth=2, key=K)
    g = jax.grad(lambda x: e(x, 0.2, jnp.ones(3)))(jnp.ones(2))
    assert e(jnp.ones(2), 0.2, jnp.ones(3)).shape == () and g.shape == (2,)
