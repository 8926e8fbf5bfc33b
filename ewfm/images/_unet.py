"""A small convolutional U-Net *field* for ``H x W x 3`` images.

It follows the one-sample field convention of the core losses and sampler:
``field(x, t, cond=None, *, beta=None)`` with ``x`` either a flat vector ``[H*W*3]`` (what the
losses and `ewfm.sample` pass: image batches are flattened to ``[B, D]``) or an image
``[H, W, 3]``; the output has the shape of ``x``. The time ``t``, the optional guidance
strength ``beta`` (Algorithm 6: one network for every ``beta in [0, beta_max]``) and the
optional condition (a one-hot hue class for classifier-free guidance, zeros = the null
token) are embedded together and added in every residual block.

With ``beta_residual=True`` beta does not enter the U-Net: the field is
``u(x, t) + phi(beta) * r(x, t, beta)``, where ``u`` is the U-Net's own output and ``r`` is a
small head (one residual block and an output convolution) on the U-Net's last features that
alone sees beta; ``phi(beta) = beta / beta_max``, or a fixed increasing curve from 0 to 1
given by its values on a uniform beta grid (``phi_knots``). At ``beta = 0`` the field *is*
the unconditional ``u``.

`EpsFromV` turns a U-Net that predicts ``v`` into a noise prediction on the VP path, and
`energy_phi` gives the knots of ``phi`` that follow the exact target's mean energy.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._nets import FourierTimeEmbedding
from .._paths import VPPath

PHI_KNOTS = 65  # grid points of an "energy" phi on [0, beta_max], interpolated linearly


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    emb: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, n_in: int, n_out: int, n_emb: int, *, key: PRNGKeyArray):
        k = jr.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(_groups(n_in), n_in)
        self.conv1 = eqx.nn.Conv2d(n_in, n_out, 3, padding=1, key=k[0])
        self.emb = eqx.nn.Linear(n_emb, n_out, key=k[1])
        self.norm2 = eqx.nn.GroupNorm(_groups(n_out), n_out)
        self.conv2 = eqx.nn.Conv2d(n_out, n_out, 3, padding=1, key=k[2])
        self.skip = eqx.nn.Conv2d(n_in, n_out, 1, key=k[3]) if n_in != n_out else None

    def __call__(self, h: Array, e: Array) -> Array:
        y = self.conv1(jax.nn.silu(self.norm1(h))) + self.emb(e)[:, None, None]
        y = self.conv2(jax.nn.silu(self.norm2(y)))
        return y + (h if self.skip is None else self.skip(h))


def _zero_conv(c_in: int, key: PRNGKeyArray) -> eqx.nn.Conv2d:
    """A 3x3 convolution to RGB whose weights and bias start at zero (its output starts at 0)."""
    conv = eqx.nn.Conv2d(c_in, 3, 3, padding=1, key=key)
    return eqx.tree_at(
        lambda m: (m.weight, m.bias), conv, (jnp.zeros_like(conv.weight), jnp.zeros((3, 1, 1)))
    )


class UNetField(eqx.Module):
    """Convolutional U-Net field: one residual block per resolution, ``len(channels)`` levels.

    ``channels[i]`` is the width at resolution ``size / 2**i``; ``size`` must be divisible by
    ``2**(len(channels) - 1)``. ``cond_dim > 0`` adds a condition input (CFG: a one-hot class,
    zeros meaning "no condition"); ``beta_input=True`` adds ``beta`` as an input, embedded with
    random Fourier features of scale ``beta_scale / beta_max`` (about ``beta_scale`` periods
    over ``[0, beta_max]``). ``beta_residual=True`` (with ``beta_input``) routes beta into a
    residual head instead: ``u(x, t) + phi(beta) r(x, t, beta)`` (`parts` returns ``(u, r)``,
    `phi` the scale), so beta 0 is exactly the unconditional field ``u``. ``phi_knots``
    (residual only) are ``phi``'s values on ``linspace(0, beta_max, len(phi_knots))``,
    increasing from 0 to 1; without them ``phi(beta) = beta / beta_max``. They are a fixed
    part of the field, never trained (`phi` stops their gradient).
    """

    t_embed: FourierTimeEmbedding
    beta_embed: FourierTimeEmbedding | None
    head_mlp: eqx.nn.MLP | None
    head: _ResBlock | None
    head_norm: eqx.nn.GroupNorm | None
    head_out: eqx.nn.Conv2d | None
    phi_knots: Float[Array, " knots"] | None
    cond_in: eqx.nn.Linear | None
    emb_mlp: eqx.nn.MLP
    conv_in: eqx.nn.Conv2d
    down: tuple[_ResBlock, ...]
    downsample: tuple[eqx.nn.Conv2d, ...]
    middle: _ResBlock
    up: tuple[_ResBlock, ...]
    upsample: tuple[eqx.nn.Conv2d, ...]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d
    size: int = eqx.field(static=True)
    cond_dim: int = eqx.field(static=True)
    beta_max: float = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        *,
        channels: tuple[int, ...] = (32, 64, 64),
        cond_dim: int = 0,
        beta_input: bool = False,
        beta_max: float = 10.0,
        beta_scale: float = 1.0,
        beta_residual: bool = False,
        phi_knots: ArrayLike | None = None,
        emb_dim: int = 64,
        time_dim: int = 32,
        time_scale: float = 16.0,
        key: PRNGKeyArray,
    ):
        levels = len(channels)
        if levels < 1 or size % 2 ** (levels - 1):
            raise ValueError(
                f"image size {size} must be divisible by 2**{levels - 1} for {levels} levels."
            )
        if beta_residual and not beta_input:
            raise ValueError("beta_residual=True needs beta_input=True.")
        if phi_knots is not None and not beta_residual:
            raise ValueError("phi_knots scale the residual head: they need beta_residual=True.")
        keys = iter(jr.split(key, 8 + 4 * levels))
        self.t_embed = FourierTimeEmbedding(time_dim, time_scale, key=next(keys))
        self.beta_embed = (
            FourierTimeEmbedding(time_dim, beta_scale / beta_max, key=next(keys))
            if beta_input
            else None
        )
        self.cond_in = eqx.nn.Linear(cond_dim, time_dim, key=next(keys)) if cond_dim else None
        in_trunk = beta_input and not beta_residual
        n_emb_in = time_dim * (1 + int(in_trunk) + int(cond_dim > 0))
        self.emb_mlp = eqx.nn.MLP(
            n_emb_in, emb_dim, emb_dim, 1, activation=jax.nn.silu, key=next(keys)
        )
        c0 = channels[0]
        self.conv_in = eqx.nn.Conv2d(3, c0, 3, padding=1, key=next(keys))
        down, downsample, n = [], [], c0
        for i, c in enumerate(channels):
            down.append(_ResBlock(n, c, emb_dim, key=next(keys)))
            n = c
            if i < levels - 1:
                downsample.append(eqx.nn.Conv2d(c, c, 3, stride=2, padding=1, key=next(keys)))
        self.down, self.downsample = tuple(down), tuple(downsample)
        self.middle = _ResBlock(n, n, emb_dim, key=next(keys))
        up, upsample = [], []
        for i in reversed(range(levels)):
            up.append(_ResBlock(n + channels[i], channels[i], emb_dim, key=next(keys)))
            n = channels[i]
            if i > 0:
                upsample.append(eqx.nn.Conv2d(n, channels[i - 1], 3, padding=1, key=next(keys)))
                n = channels[i - 1]
        self.up, self.upsample = tuple(up), tuple(upsample)
        self.norm_out = eqx.nn.GroupNorm(_groups(c0), c0)
        # Start from a zero field (standard for diffusion U-Nets): early steps stay stable.
        self.conv_out = _zero_conv(c0, next(keys))
        self.size = size
        self.cond_dim = cond_dim
        self.beta_max = float(beta_max)
        if beta_residual:
            kh = jr.split(next(keys), 3)
            self.head_mlp = eqx.nn.MLP(
                2 * time_dim, emb_dim, emb_dim, 1, activation=jax.nn.silu, key=kh[0]
            )
            self.head = _ResBlock(c0, c0, emb_dim, key=kh[1])
            self.head_norm = eqx.nn.GroupNorm(_groups(c0), c0)
            self.head_out = _zero_conv(c0, kh[2])
            self.phi_knots = None if phi_knots is None else jnp.asarray(phi_knots, jnp.float32)
        else:
            self.head_mlp = self.head = self.head_norm = self.head_out = None
            self.phi_knots = None

    def parts(
        self,
        x: Float[Array, "..."],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
        *,
        beta: Float[ArrayLike, ""] | None = None,
    ) -> tuple[Float[Array, "..."], Float[Array, "..."] | None]:
        """``(u, r)``: the U-Net output and, for a residual-beta net, the beta head's output
        (``None`` otherwise); the field is ``u + phi(beta) r``. One trunk pass."""
        s = self.size
        if x.shape not in ((s * s * 3,), (s, s, 3)):
            raise ValueError(
                f"this U-Net takes images of shape ({s}, {s}, 3) or flat ({s * s * 3},), "
                f"got {x.shape}."
            )
        t_emb = self.t_embed(t)
        parts = [t_emb]
        if self.beta_embed is not None:
            if beta is None:
                raise ValueError("this field was built with beta_input=True: pass beta=...")
            if self.head is None:
                parts.append(self.beta_embed(beta))
        if self.cond_in is not None:
            if cond is None:
                raise ValueError(f"this field needs a condition of size {self.cond_dim}.")
            parts.append(self.cond_in(cond))
        e = self.emb_mlp(jnp.concatenate(parts))
        h = self.conv_in(jnp.transpose(x.reshape(s, s, 3), (2, 0, 1)))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.middle(h, e)
        for j, block in enumerate(self.up):
            h = block(jnp.concatenate([h, skips.pop()]), e)
            if j < len(self.upsample):
                c, hh, ww = h.shape
                h = jax.image.resize(h, (c, 2 * hh, 2 * ww), "nearest")
                h = self.upsample[j](h)
        u = self.conv_out(jax.nn.silu(self.norm_out(h)))
        u = jnp.transpose(u, (1, 2, 0)).reshape(x.shape)
        if self.head is None:
            return u, None
        assert self.beta_embed is not None and self.head_mlp is not None
        assert self.head_norm is not None and self.head_out is not None and beta is not None
        eb = self.head_mlp(jnp.concatenate([t_emb, self.beta_embed(beta)]))
        r = self.head_out(jax.nn.silu(self.head_norm(self.head(h, eb))))
        return u, jnp.transpose(r, (1, 2, 0)).reshape(x.shape)

    def phi(self, beta: Float[ArrayLike, "*b"]) -> Float[Array, "*b"]:
        """The residual head's scale at ``beta``: ``beta / beta_max``, or the knots
        interpolated linearly (and held fixed: no gradient reaches them)."""
        b = jnp.asarray(beta, jnp.float32)
        if self.phi_knots is None:
            return b / self.beta_max
        grid = jnp.linspace(0.0, self.beta_max, self.phi_knots.shape[0])
        return jnp.interp(b, grid, jax.lax.stop_gradient(self.phi_knots))

    def __call__(
        self,
        x: Float[Array, "..."],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
        *,
        beta: Float[ArrayLike, ""] | None = None,
    ) -> Float[Array, "..."]:
        u, r = self.parts(x, t, cond, beta=beta)
        if r is None or beta is None:
            return u
        return u + self.phi(beta) * r


class EpsFromV(eqx.Module):
    """A noise-prediction field from a network ``net`` that predicts ``v = alpha eps - sigma
    x0`` on a VP path: ``eps(x, t) = sigma_t x + alpha_t v(x, t)`` (``alpha^2 + sigma^2 = 1``).

    Why: at high noise the optimal noise prediction is almost ``x / sigma``; a U-Net asked
    for ``eps`` directly learns that identity only roughly, and the error is divided by
    ``alpha_1 ~ 0.007`` on the way back to the data (measured: 600 steps gave an eps MSE of
    0.008 at t = 1, ~400x the optimum, and samples far outside [-1, 1]). Here the identity
    is exact. The loss is still ``L_CED`` on eps, so its minimiser is unchanged.
    """

    net: Any
    path: VPPath

    def __call__(
        self,
        x: Float[Array, "..."],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
        *,
        beta: Float[ArrayLike, ""] | None = None,
    ) -> Float[Array, "..."]:
        return self.path.sigma(t) * x + self.path.alpha(t) * self.net(x, t, cond, beta=beta)

    def parts(
        self,
        x: Float[Array, "..."],
        t: Float[ArrayLike, ""],
        cond: Float[Array, " cond"] | None = None,
        *,
        beta: Float[ArrayLike, ""] | None = None,
    ) -> tuple[Float[Array, "..."], Float[Array, "..."] | None]:
        """The residual net's ``(u, r)`` in noise-prediction units: ``(sigma x + alpha u_v,
        alpha r_v)``, so that ``u + phi(beta) r`` is the field."""
        a, s = self.path.alpha(t), self.path.sigma(t)
        u, r = self.net.parts(x, t, cond, beta=beta)
        return s * x + a * u, None if r is None else a * r

    def phi(self, beta: Float[ArrayLike, "*b"]) -> Float[Array, "*b"]:
        """The wrapped net's ``phi``: a factor, the same in ``v`` and in noise units."""
        return self.net.phi(beta)


def energy_phi(energy: Any, beta_max: float, knots: int = PHI_KNOTS) -> np.ndarray:
    """``phi`` of ``beta_phi="energy"`` on ``linspace(0, beta_max, knots)``: the share of the
    exact target's mean-energy shift reached at each beta,
    ``(m(0) - m(beta)) / (m(0) - m(beta_max))`` with ``m(beta) = sum_i softmax(-beta E)_i E_i``.

    ``m`` decreases (its derivative is ``-Var_beta(E)``), so ``phi`` rises from 0 to 1; near 0
    it is linear in beta, like the guided field's departure from the unguided one. Energies
    that are all equal give ``beta / beta_max``.
    """
    e = np.asarray(energy, np.float64)
    grid = np.linspace(0.0, beta_max, knots)
    logits = -grid[:, None] * (e - e.min())[None, :]
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    m = (w * e).sum(axis=1) / w.sum(axis=1)
    span = m[0] - m[-1]
    if not span > 1e-12 * max(1.0, abs(m[0])):
        return (grid / beta_max).astype(np.float32)
    return np.clip((m[0] - m) / span, 0.0, 1.0).astype(np.float32)
