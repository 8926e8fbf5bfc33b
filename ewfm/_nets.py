"""Equinox networks: time embedding, MLP fields, QGPO's residual field, twin Q, V and energy nets.

Every field acts on ONE sample: ``field(x [dim], t [], cond [cond_dim] | None, *, beta=None)``
returns ``[dim]`` (velocity, noise or score, whatever it was trained to predict). Vmap it for
batches; the losses and the sampler do.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Activation = Callable[[Array], Array]


class FourierTimeEmbedding(eqx.Module):
    """Gaussian random Fourier features of a scalar (QGPO: 32 features, scale 30).

    ``[sin(2 pi t W), cos(2 pi t W)]`` with fixed ``W ~ N(0, scale^2)``; ``W`` is not trained.
    """

    weights: Float[Array, " half"]
    dim: int = eqx.field(static=True)

    def __init__(self, dim: int = 32, scale: float = 30.0, *, key: PRNGKeyArray):
        if dim < 2 or dim % 2:
            raise ValueError(f"FourierTimeEmbedding: dim must be even and >= 2, got {dim}.")
        self.weights = jr.normal(key, (dim // 2,)) * scale
        self.dim = dim

    def __call__(self, t: Float[ArrayLike, ""]) -> Float[Array, " dim"]:
        proj = 2.0 * jnp.pi * jnp.asarray(t) * jax.lax.stop_gradient(self.weights)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)])


def _inputs(x, t_emb, cond, cond_dim, beta_emb):
    parts = [x, t_emb]
    if cond_dim:
        if cond is None:
            raise ValueError(f"this field needs a condition of size {cond_dim}, got None.")
        parts.append(cond)
    if beta_emb is not None:
        parts.append(beta_emb)
    return jnp.concatenate(parts)


class MLPField(eqx.Module):
    """MLP field on ``[x, emb(t), cond, emb(beta)]``.

    ``cond_dim > 0`` adds a condition input (e.g. the state); ``beta_input=True`` adds the
    guidance strength as an input embedded like ``t`` (Algorithm 6 in docs/method.md: one
    net for all beta).
    """

    mlp: eqx.nn.MLP
    t_embed: FourierTimeEmbedding
    beta_embed: FourierTimeEmbedding | None
    cond_dim: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        cond_dim: int = 0,
        beta_input: bool = False,
        width: int = 256,
        depth: int = 3,
        activation: Activation = jax.nn.silu,
        time_dim: int = 32,
        time_scale: float = 30.0,
        beta_scale: float = 1.0,
        key: PRNGKeyArray,
    ):
        k1, k2, k3 = jr.split(key, 3)
        self.t_embed = FourierTimeEmbedding(time_dim, time_scale, key=k1)
        self.beta_embed = FourierTimeEmbedding(time_dim, beta_scale, key=k2) if beta_input else None
        in_size = dim + time_dim + cond_dim + (time_dim if beta_input else 0)
        self.mlp = eqx.nn.MLP(in_size, dim, width, depth, activation=activation, key=k3)
        self.cond_dim = cond_dim

    def __call__(
        self,
        x: Float[Array, " dim"],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
        *,
        beta: Float[ArrayLike, ""] | None = None,
    ) -> Float[Array, " dim"]:
        b = None
        if self.beta_embed is not None:
            if beta is None:
                raise ValueError("this field was built with beta_input=True: pass beta=...")
            b = self.beta_embed(beta)
        return self.mlp(_inputs(x, self.t_embed(t), cond, self.cond_dim, b))


class _ResBlock(eqx.Module):
    lin1: eqx.nn.Linear
    lin2: eqx.nn.Linear
    emb: eqx.nn.Linear
    norm: eqx.nn.LayerNorm
    skip: eqx.nn.Linear | None

    def __init__(self, n_in: int, n_out: int, n_emb: int, *, key: PRNGKeyArray):
        k = jr.split(key, 4)
        self.lin1 = eqx.nn.Linear(n_in, n_out, key=k[0])
        self.lin2 = eqx.nn.Linear(n_out, n_out, key=k[1])
        self.emb = eqx.nn.Linear(n_emb, n_out, key=k[2])
        self.norm = eqx.nn.LayerNorm(n_out)
        self.skip = eqx.nn.Linear(n_in, n_out, key=k[3]) if n_in != n_out else None

    def __call__(self, h: Array, e: Array) -> Array:
        y = self.lin1(jax.nn.silu(h)) + self.emb(e)
        y = self.lin2(jax.nn.silu(self.norm(y)))
        return y + (h if self.skip is None else self.skip(h))


class ResidualMLPField(eqx.Module):
    """QGPO's score-network shape: a U-Net of residual MLP blocks (about 1.6M parameters).

    The time (and optional beta) embedding and the condition enter through a 128-wide
    embedding added in every block; widths go down ``widths`` and back up with skips.
    """

    t_embed: FourierTimeEmbedding
    beta_embed: FourierTimeEmbedding | None
    cond_in: eqx.nn.Linear | None
    emb_mlp: eqx.nn.MLP
    down: tuple[_ResBlock, ...]
    middle: _ResBlock
    up: tuple[_ResBlock, ...]
    last: eqx.nn.Linear
    cond_dim: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        cond_dim: int = 0,
        beta_input: bool = False,
        widths: tuple[int, ...] = (512, 256, 128),
        emb_dim: int = 128,
        time_dim: int = 32,
        time_scale: float = 30.0,
        beta_scale: float = 1.0,
        key: PRNGKeyArray,
    ):
        keys = iter(jr.split(key, 8 + 2 * len(widths)))
        self.t_embed = FourierTimeEmbedding(time_dim, time_scale, key=next(keys))
        self.beta_embed = (
            FourierTimeEmbedding(time_dim, beta_scale, key=next(keys)) if beta_input else None
        )
        self.cond_in = eqx.nn.Linear(cond_dim, 32, key=next(keys)) if cond_dim else None
        n_emb_in = time_dim + (32 if cond_dim else 0) + (time_dim if beta_input else 0)
        self.emb_mlp = eqx.nn.MLP(
            n_emb_in, emb_dim, emb_dim, 1, activation=jax.nn.silu, key=next(keys)
        )
        down, n = [], dim
        for w in widths:
            down.append(_ResBlock(n, w, emb_dim, key=next(keys)))
            n = w
        self.down = tuple(down)
        self.middle = _ResBlock(n, n, emb_dim, key=next(keys))
        up = []
        for w in reversed(widths[:-1]):
            up.append(_ResBlock(2 * n, w, emb_dim, key=next(keys)))
            n = w
        self.up = tuple(up)
        self.last = eqx.nn.Linear(2 * n, dim, key=next(keys))
        self.cond_dim = cond_dim

    def __call__(
        self,
        x: Float[Array, " dim"],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
        *,
        beta: Float[ArrayLike, ""] | None = None,
    ) -> Float[Array, " dim"]:
        parts = [self.t_embed(t)]
        if self.cond_in is not None:
            if cond is None:
                raise ValueError(f"this field needs a condition of size {self.cond_dim}.")
            parts.append(jax.nn.silu(self.cond_in(cond)))
        if self.beta_embed is not None:
            if beta is None:
                raise ValueError("this field was built with beta_input=True: pass beta=...")
            parts.append(self.beta_embed(beta))
        e = self.emb_mlp(jnp.concatenate(parts))
        h, skips = x, []
        for block in self.down:
            h = block(h, e)
            skips.append(h)
        h = self.middle(h, e)
        for block, s in zip(self.up, reversed(skips[1:]), strict=True):
            h = block(jnp.concatenate([h, s]), e)
        return self.last(jnp.concatenate([h, skips[0]]))


def _normed_mlp(mlp: eqx.nn.MLP, norms: tuple[eqx.nn.LayerNorm, ...], x: Array) -> Array:
    """``mlp(x)`` with a LayerNorm after each hidden layer's affine map (before its
    activation), as in critics that stay stable under long temporal-difference training."""
    for layer, norm in zip(mlp.layers[:-1], norms, strict=True):
        x = mlp.activation(norm(layer(x)))
    return mlp.layers[-1](x)


def _norms(width: int, depth: int, layer_norm: bool) -> tuple[eqx.nn.LayerNorm, ...] | None:
    return tuple(eqx.nn.LayerNorm(width) for _ in range(depth)) if layer_norm else None


class TwinQ(eqx.Module):
    """Two independent Q networks ``Q_k(s, a)`` evaluated together (clipped double Q).

    ``__call__`` returns both values ``[2]``; `min` returns the smaller (the critic estimate).
    The two members are stacked on a leading axis, so a batch of pairs runs as one batched
    matmul per layer. ``layer_norm=True`` puts a LayerNorm after every hidden layer.
    """

    nets: eqx.nn.MLP  # two MLPs stacked on a leading axis
    norms: tuple[eqx.nn.LayerNorm, ...] | None  # their LayerNorms, stacked alike (or none)

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        *,
        width: int = 256,
        depth: int = 3,
        activation: Activation = jax.nn.relu,
        layer_norm: bool = False,
        key: PRNGKeyArray,
    ):
        make = lambda k: (
            eqx.nn.MLP(
                state_dim + action_dim, "scalar", width, depth, activation=activation, key=k
            ),
            _norms(width, depth, layer_norm),
        )
        self.nets, self.norms = eqx.filter_vmap(make)(jr.split(key, 2))

    def __call__(self, s: Float[Array, " state"], a: Float[Array, " action"]) -> Float[Array, "2"]:
        sa = jnp.concatenate([s, a])
        if self.norms is None:
            return eqx.filter_vmap(lambda net: net(sa))(self.nets)
        return eqx.filter_vmap(lambda net, n: _normed_mlp(net, n, sa))(self.nets, self.norms)

    def min(self, s: Float[Array, " state"], a: Float[Array, " action"]) -> Float[Array, ""]:
        return jnp.min(self(s, a))


class StateValue(eqx.Module):
    """A state-value network ``V(s)``: an MLP to a scalar (optionally with LayerNorms)."""

    net: eqx.nn.MLP
    norms: tuple[eqx.nn.LayerNorm, ...] | None

    def __init__(
        self,
        state_dim: int,
        *,
        width: int = 256,
        depth: int = 2,
        activation: Activation = jax.nn.relu,
        layer_norm: bool = False,
        key: PRNGKeyArray,
    ):
        self.net = eqx.nn.MLP(state_dim, "scalar", width, depth, activation=activation, key=key)
        self.norms = _norms(width, depth, layer_norm)

    def __call__(self, s: Float[Array, " state"]) -> Float[Array, ""]:
        return self.net(s) if self.norms is None else _normed_mlp(self.net, self.norms, s)


class EnergyNet(eqx.Module):
    """Scalar time-dependent energy network ``f(x_t, t, cond)`` for CEP guidance (``f ≈ -E_t``)."""

    mlp: eqx.nn.MLP
    t_embed: FourierTimeEmbedding
    cond_dim: int = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        cond_dim: int = 0,
        width: int = 256,
        depth: int = 3,
        activation: Activation = jax.nn.silu,
        time_dim: int = 32,
        time_scale: float = 30.0,
        key: PRNGKeyArray,
    ):
        k1, k2 = jr.split(key)
        self.t_embed = FourierTimeEmbedding(time_dim, time_scale, key=k1)
        in_size = dim + time_dim + cond_dim
        self.mlp = eqx.nn.MLP(in_size, "scalar", width, depth, activation=activation, key=k2)
        self.cond_dim = cond_dim

    def __call__(
        self,
        x: Float[Array, " dim"],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
    ) -> Float[Array, ""]:
        return self.mlp(_inputs(x, self.t_embed(t), cond, self.cond_dim, None))
