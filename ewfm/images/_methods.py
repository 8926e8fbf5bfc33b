"""The image methods: for each, its networks, its loss and the field it samples.

All train a `UNetField` through `ewfm.fit` and sample with an `ewfm.Sampler`:

- ``efm``: energy-weighted flow matching ``L_CEFM`` on the OT path (velocity field).
- ``ed``: energy-weighted diffusion ``L_CED`` on the VP path (noise prediction, DPM-Solver);
  by default (``ed_param="v"``) the U-Net predicts ``v = alpha eps - sigma x0`` and the
  field's noise prediction is ``sigma x + alpha v`` (`EpsFromV`): the same loss and minimiser,
  but the near-identity map ``eps ~ x`` at high noise is exact instead of learnt.
- ``cep``: gradient-guidance baseline (QGPO/CEP), on the VP path as in QGPO: the unguided
  noise prediction (`EpsFromV` around a `UNetField`) trained by plain denoising, plus an
  energy network ``f(x_t, t, beta) = (beta / beta_max) g(x_t, t, beta)`` trained by
  `ewfm.cep_loss` on groups of ``cep_group`` images (one beta per group), so that ``f ~
  -E_t``, the intermediate energy of ``pi_beta``; sampling adds ``grad_x f`` to the score
  (`ewfm.EnergyGuidedField`): one backward pass per evaluation, the cost EFM avoids.
- ``cfg``: classifier-free guidance baseline: flow matching conditioned on the hue class of
  each training image (one-hot; zeros, the null token, with probability ``cfg_dropout``),
  sampled with `ewfm.CFGField` at scale ``w`` towards the class of the target hue.

With ``beta=None`` (the default) ``efm`` and ``ed`` take beta as a network input (Algorithm 6),
so one run serves every ``beta in [0, beta_max]``; with a number they train at that fixed beta.
How the training betas are drawn is ``beta_draw`` (see `BETA_DRAWS`), each draw being
``U[0, beta_max]`` except for a point mass ``beta_zero`` at beta 0. Where beta enters the
network is ``beta_net`` (see `BETA_NETS`): by default a residual head,
``u(x, t) + phi(beta) r(x, t, beta)``, whose ``u`` is trained by plain flow matching on every
image and ``r`` by the energy-weighted loss with ``u`` held fixed; ``phi`` is ``beta_phi``
(see `BETA_PHIS`).

Each method is one `Method` object in ``_IMPLEMENTATIONS``. A new method is a name in
``METHODS`` and ``GUIDANCE`` (``_config.py``) and one `Method` here.
"""

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._losses import cep_loss, cfm_loss, denoising_loss, ed_loss, efm_loss
from .._nets import EnergyNet
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import CFGField, EnergyGuidedField, Sampler
from .._weights import energy_weights
from ._config import METHODS, ImageConfig, check_guidance
from ._target import hue_class, n_classes
from ._unet import PHI_KNOTS, EpsFromV, UNetField, energy_phi

Loss = Callable[[Any, dict, PRNGKeyArray], Array]
"""``loss(model, batch, key) -> scalar``, as `ewfm.fit` takes it."""

_OT, _VP = OTPath(), VPPath()


class CEPNets(eqx.Module):
    """A ``cep`` run's two networks: the unguided ``field`` (a `UNetField` predicting ``v`` on
    the VP path; `EpsFromV` turns it into a noise prediction) and ``energy``, an
    `ewfm.EnergyNet` ``g(x_t, t, beta / beta_max)``; the guidance energy is
    ``f = (beta / beta_max) g``, exactly 0 at beta 0, so beta 0 samples the unguided field.
    """

    field: UNetField
    energy: EnergyNet
    beta_max: float = eqx.field(static=True)

    def f(
        self, x: Float[Array, " dim"], t: Float[ArrayLike, ""], beta: Float[ArrayLike, ""]
    ) -> Float[Array, ""]:
        """``f(x_t, t, beta) ~ -E_t``, the intermediate energy of ``pi_beta`` (up to a constant)."""
        b = jnp.asarray(beta, jnp.float32) / self.beta_max
        return b * self.energy(x, t, b[None])


class _EnergyAtBeta(eqx.Module):
    """``f(x, t, beta)`` at one beta with `ewfm.EnergyGuidedField`'s signature."""

    nets: CEPNets
    beta: Float[Array, ""]

    def __call__(self, x: Array, t: ArrayLike, cond: Array | None = None) -> Array:
        return self.nets.f(x, t, self.beta)


# -- training betas -------------------------------------------------------------------------------


def _draw_betas(cfg: ImageConfig, key: PRNGKeyArray, n: int) -> Array:
    """``n`` training betas: ``U[0, beta_max]``, or exactly 0 with probability ``beta_zero``."""
    ku, kz = jr.split(key)
    b = jr.uniform(ku, (n,), maxval=cfg.beta_max)
    if cfg.beta_zero:
        b = jnp.where(jr.bernoulli(kz, cfg.beta_zero, (n,)), 0.0, b)
    return b


def _log_z(b: Array, all_e: Array) -> Array:
    """``log Z(beta) = log mean_i exp(-beta E_i)`` over the training set, per beta."""
    return jax.nn.logsumexp(-b[:, None] * all_e[None, :], axis=1) - math.log(all_e.shape[0])


def _joint(model: Any) -> Callable[..., Array]:
    """The field with beta as a one-element condition, one per image (``sample``, ``resample``)."""
    return lambda x, t, c: model(x, t, None, beta=c[0])


# -- the beta-input losses of the input net, one per beta_draw ------------------------------------


def _batch_loss(cfg: ImageConfig, weighted: Callable, path: AbstractPath, energy, images) -> Loss:
    def loss(model, batch, key):
        kb, kt = jr.split(key)
        b = _draw_betas(cfg, kb, 1)[0]  # Algorithm 6: one beta per batch
        return weighted(eqx.Partial(model, beta=b), path, batch["x"], batch["energy"], b, kt)

    return loss


def _groups_loss(cfg: ImageConfig, weighted: Callable, path: AbstractPath, energy, images) -> Loss:
    g = cfg.beta_groups

    def loss(model, batch, key):
        kb, kt = jr.split(key)
        b = _draw_betas(cfg, kb, g)
        x = batch["x"].reshape(g, -1, batch["x"].shape[-1])
        e = batch["energy"].reshape(g, -1)

        def one(xg, eg, bg, kg):
            return weighted(eqx.Partial(model, beta=bg), path, xg, eg, bg, kg)

        return jnp.mean(jax.vmap(one)(x, e, b, jr.split(kt, g)))

    return loss


def _sample_loss(cfg: ImageConfig, weighted: Callable, path: AbstractPath, energy, images) -> Loss:
    all_e = jnp.asarray(energy, jnp.float32)

    def loss(model, batch, key):
        kb, kt = jr.split(key)
        b = _draw_betas(cfg, kb, batch["x"].shape[0])
        log_z = _log_z(b, all_e)
        # EFM on the joint (x, beta) at beta 1: weight exp(-beta E) / Z(beta) per image
        joint_e = b * batch["energy"] + log_z
        return weighted(_joint(model), path, batch["x"], joint_e, 1.0, kt, cond=b[:, None])

    return loss


def _resample_loss(cfg: ImageConfig, weighted: Callable, path: AbstractPath, energy, images):
    all_e = jnp.asarray(energy, jnp.float32)
    if images is None:
        raise ValueError('beta_draw="resample" needs the training images (images=...).')
    all_x = jnp.asarray(images, jnp.float32)

    def loss(model, batch, key):
        kb, ki, kt = jr.split(key, 3)
        b = _draw_betas(cfg, kb, batch["x"].shape[0])
        idx = jr.categorical(ki, -b[:, None] * all_e[None, :])  # one draw from pi_beta each
        zero = jnp.zeros_like(b)  # weights all 1: the draw itself is the reweighting
        return weighted(_joint(model), path, all_x[idx], zero, 0.0, kt, cond=b[:, None])

    return loss


_INPUT_LOSSES = {
    "batch": _batch_loss,
    "groups": _groups_loss,
    "sample": _sample_loss,
    "resample": _resample_loss,
}


def _residual_loss(cfg: ImageConfig, path: AbstractPath, goal_name: str, energy: Any) -> Loss:
    """The residual-beta loss: ``L_u + L_r`` on one draw of ``(t, eps)`` and one network pass.

    ``L_u = mean ||u - target||^2`` (plain flow matching / denoising on every image: ``u``
    becomes the unguided field) and ``L_r = mean w_i ||sg(u) + phi(beta_i) r - target||^2``
    with the model's ``phi`` (`UNetField.phi`) and the weights of ``cfg.beta_draw`` (``sg``:
    stop gradient). For every beta > 0 the minimiser of ``L_r`` is ``u + phi r = `` the guided
    field. The loss never weights ``u`` itself; in the U-Net the head reads the shared
    trunk's features, so ``L_r`` still reaches ``u`` through the trunk.
    """
    draw = cfg.beta_draw
    all_e = None if energy is None else jnp.asarray(energy, jnp.float32)

    def weights(e: Array, key: PRNGKeyArray) -> tuple[Array, Array]:
        n = e.shape[0]
        if draw == "batch":
            b = jnp.full((n,), _draw_betas(cfg, key, 1)[0])
            return b, energy_weights(e, b[0])
        if draw == "groups":
            g = cfg.beta_groups
            bg = _draw_betas(cfg, key, g)
            w = jax.vmap(energy_weights)(e.reshape(g, -1), bg).reshape(n)
            return jnp.repeat(bg, n // g), w
        b = _draw_betas(cfg, key, n)  # "sample": the joint (x, beta) at beta 1
        assert all_e is not None
        return b, energy_weights(b * e + _log_z(b, all_e), 1.0)

    def loss(model, batch, key):
        kb, kn = jr.split(key)
        kt, ke = jr.split(kn)  # as the core losses draw (t, eps) from a key
        x0 = batch["x"]
        b, w = weights(batch["energy"], kb)
        t = jr.uniform(kt, x0.shape[:1], minval=path.t_min, maxval=1.0, dtype=x0.dtype)
        ps = jax.vmap(path.sample)(x0, jr.normal(ke, x0.shape, dtype=x0.dtype), t)
        u, r = jax.vmap(lambda x, s, bi: model.parts(x, s, beta=bi))(ps.x_t, t, b)
        goal = ps.eps if goal_name == "eps" else ps.velocity
        loss_u = jnp.mean(jnp.sum((u - goal) ** 2, axis=1))
        guided = jax.lax.stop_gradient(u) + model.phi(b)[:, None] * r
        loss_r = jnp.mean(w * jnp.sum((guided - goal) ** 2, axis=1))
        return loss_u + loss_r

    return loss


# -- the methods ----------------------------------------------------------------------------------


def _unet(cfg: ImageConfig, key: PRNGKeyArray, knots: Any, *, cond_dim: int = 0, residual: bool):
    return UNetField(
        cfg.size,
        channels=cfg.channels,
        cond_dim=cond_dim,
        beta_input=cfg.beta_input,
        beta_max=cfg.beta_max,
        beta_scale=cfg.beta_scale,
        beta_residual=residual,
        phi_knots=knots,
        key=key,
    )


@dataclasses.dataclass(frozen=True)
class Method(abc.ABC):
    """One image method: its path and sampler, its networks, its loss, its guided field."""

    path: AbstractPath
    solver: str  # what `ewfm.Sampler` integrates with
    prediction: str  # what the sampled field outputs

    def sampler(self, cfg: ImageConfig) -> Sampler:
        return Sampler(self.path, self.solver, cfg.sample_steps, self.prediction)

    def residual(self, cfg: ImageConfig) -> bool:
        """Whether beta enters through the U-Net's residual head (`BETA_NETS`)."""
        return False

    @abc.abstractmethod
    def build(self, cfg: ImageConfig, key: PRNGKeyArray, knots: Any) -> Any:
        """The untrained networks (``knots``: the residual head's ``phi``, or ``None``)."""

    def field(self, cfg: ImageConfig, net: Any) -> Any:
        """The unguided field of ``net``: what the loss trains and the sampler integrates."""
        return net

    @abc.abstractmethod
    def loss(self, cfg: ImageConfig, energy: Any, images: Any) -> Loss:
        """The training loss; ``energy``/``images`` are the whole training set's."""

    @abc.abstractmethod
    def guided(self, cfg: ImageConfig, net: Any, beta: float | None, scale: float | None) -> Any:
        """The field to sample at a checked ``beta`` or ``scale`` (`check_guidance`)."""

    def cond(self, cfg: ImageConfig, n: int) -> Array | None:
        """The condition of ``n`` samples (``None``: unconditional)."""
        return None


@dataclasses.dataclass(frozen=True)
class _Weighted(Method):
    """``efm`` and ``ed``: an energy-weighted loss at a fixed beta or with beta an input."""

    weighted: Callable[..., Array]  # efm_loss or ed_loss
    goal: str  # what the residual loss regresses: "velocity" or "eps"

    def residual(self, cfg: ImageConfig) -> bool:
        return cfg.beta_input and cfg.beta_net == "residual"

    def build(self, cfg: ImageConfig, key: PRNGKeyArray, knots: Any) -> Any:
        return _unet(cfg, key, knots, residual=self.residual(cfg))

    def loss(self, cfg: ImageConfig, energy: Any, images: Any) -> Loss:
        inner = self._loss(cfg, energy, images)
        return lambda model, batch, key: inner(self.field(cfg, model), batch, key)

    def _loss(self, cfg: ImageConfig, energy: Any, images: Any) -> Loss:
        path, weighted = self.path, self.weighted
        if not cfg.beta_input:
            beta = float(cfg.beta)  # type: ignore[arg-type]
            return lambda model, batch, key: weighted(
                model, path, batch["x"], batch["energy"], beta, key
            )
        if cfg.beta_draw in ("sample", "resample") and energy is None:
            raise ValueError(
                f'beta_draw="{cfg.beta_draw}" needs the training energies (energy=...).'
            )
        if self.residual(cfg):
            return _residual_loss(cfg, path, self.goal, energy)
        return _INPUT_LOSSES[cfg.beta_draw](cfg, weighted, path, energy, images)

    def guided(self, cfg: ImageConfig, net: Any, beta: float | None, scale: float | None) -> Any:
        field = self.field(cfg, net)
        if cfg.beta_input:
            return eqx.Partial(field, beta=jnp.asarray(beta, jnp.float32))
        return field


@dataclasses.dataclass(frozen=True)
class _ED(_Weighted):
    """``ed``: the U-Net predicts ``v`` (``ed_param="v"``, wrapped in `EpsFromV`) or ``eps``."""

    def field(self, cfg: ImageConfig, net: Any) -> Any:
        return EpsFromV(net, _VP) if cfg.ed_param == "v" else net


@dataclasses.dataclass(frozen=True)
class _CFG(Method):
    """``cfg``: flow matching on hue classes, sampled with `ewfm.CFGField` at a scale."""

    def build(self, cfg: ImageConfig, key: PRNGKeyArray, knots: Any) -> Any:
        return _unet(cfg, key, knots, cond_dim=n_classes(cfg.n_bins), residual=False)

    def loss(self, cfg: ImageConfig, energy: Any, images: Any) -> Loss:
        path, dropout = self.path, cfg.cfg_dropout

        def cfg_loss(model, batch, key):
            kd, kt = jr.split(key)
            keep = 1.0 - jr.bernoulli(kd, dropout, batch["energy"].shape).astype(jnp.float32)
            return cfm_loss(model, path, batch["x"], kt, cond=batch["onehot"] * keep[:, None])

        return cfg_loss

    def guided(self, cfg: ImageConfig, net: Any, beta: float | None, scale: float | None) -> Any:
        w = 1.0 if scale is None else scale
        return CFGField(net, jnp.asarray(w, jnp.float32), jnp.zeros(n_classes(cfg.n_bins)))

    def cond(self, cfg: ImageConfig, n: int) -> Array:
        """One-hot: the hue class of the target hue (the bin containing it)."""
        c = int(hue_class(np.array([cfg.target_hue]), np.array([True]), cfg.n_bins)[0])
        return jnp.zeros((n, n_classes(cfg.n_bins))).at[:, c].set(1.0)


@dataclasses.dataclass(frozen=True)
class _CEP(Method):
    """``cep``: unguided denoising plus a contrastive energy net, gradient guidance."""

    def build(self, cfg: ImageConfig, key: PRNGKeyArray, knots: Any) -> Any:
        kf, ke = jr.split(key)
        field = UNetField(cfg.size, channels=cfg.channels, key=kf)
        energy = EnergyNet(cfg.size * cfg.size * 3, cond_dim=1, key=ke)
        return CEPNets(field, energy, float(cfg.beta_max))

    def field(self, cfg: ImageConfig, net: Any) -> Any:
        return EpsFromV(net.field, _VP)

    def loss(self, cfg: ImageConfig, energy: Any, images: Any) -> Loss:
        """`ewfm.denoising_loss` of the unguided field plus `ewfm.cep_loss` of the energy net:
        the batch is cut into groups of ``cep_group`` images, each group with its own beta
        ``U[0, beta_max]`` (given to the net, and the temperature of its contrastive target)."""
        path, m = self.path, cfg.cep_group

        def loss(model: CEPNets, batch, key):
            kf, kb, kc = jr.split(key, 3)
            x, e = batch["x"], batch["energy"]
            g = x.shape[0] // m
            betas = _draw_betas(cfg, kb, g)

            def group(xg, eg, b, k):
                f = lambda y, t, c: model.f(y, t, b)
                return cep_loss(f, path, xg[None], eg[None], b, k)

            contrastive = jax.vmap(group)(
                x.reshape(g, m, -1), e.reshape(g, m), betas, jr.split(kc, g)
            )
            return denoising_loss(self.field(cfg, model), path, x, kf) + jnp.mean(contrastive)

        return loss

    def guided(self, cfg: ImageConfig, net: Any, beta: float | None, scale: float | None) -> Any:
        energy = _EnergyAtBeta(net, jnp.asarray(beta, jnp.float32))
        return EnergyGuidedField(self.field(cfg, net), energy, _VP, 1.0, "eps")


_IMPLEMENTATIONS: dict[str, Method] = {
    "efm": _Weighted(_OT, "midpoint", "velocity", efm_loss, "velocity"),
    "ed": _ED(_VP, "dpm2", "eps", ed_loss, "eps"),
    "cfg": _CFG(_OT, "midpoint", "velocity"),
    "cep": _CEP(_VP, "dpm2", "eps"),
}
assert set(_IMPLEMENTATIONS) == set(METHODS), "every name in METHODS needs a Method"


def method(cfg: ImageConfig) -> Method:
    """The `Method` of the run ``cfg``."""
    return _IMPLEMENTATIONS[cfg.method]


# -- what the run uses -----------------------------------------------------------------------------


def _build_net(cfg: ImageConfig, key: PRNGKeyArray, phi_knots: Any = None) -> Any:
    return method(cfg).build(cfg, key, phi_knots)


def _uses_knots(cfg: ImageConfig) -> bool:
    return method(cfg).residual(cfg) and cfg.beta_phi == "energy"


def init_net(cfg: ImageConfig, key: PRNGKeyArray, energy: ArrayLike | None = None) -> Any:
    """The untrained networks of a run; ``energy`` (the training set's energies) fixes the
    residual head's scale when ``cfg.beta_phi == "energy"`` (`energy_phi`).

    Built as one XLA program compiled at backend optimisation level 0: built eagerly, each
    of its few dozen random draws of a new shape compiles on its own (17 s on a 2-core CPU,
    as long as the quick run's first 100 steps); this way about 7 s. The values are those
    of the eager build up to float rounding (the same random bits).
    """
    knots = None
    if _uses_knots(cfg):
        if energy is None:
            raise ValueError('beta_phi="energy" needs the training energies (energy=...).')
        knots = energy_phi(energy, cfg.beta_max)
    shape = eqx.filter_eval_shape(_build_net, cfg, key, knots)
    arrays = jax.jit(
        lambda k, kn: eqx.filter(_build_net(cfg, k, kn), eqx.is_array),
        compiler_options={"xla_backend_optimization_level": 0},
    )(key, knots)
    return eqx.combine(arrays, eqx.filter(shape, eqx.is_array, inverse=True))


def net_structure(cfg: ImageConfig) -> Any:
    """The run's networks with `jax.ShapeDtypeStruct` leaves: what a checkpoint is read into,
    without computing an initialisation that would be overwritten."""
    knots = np.zeros(PHI_KNOTS, np.float32) if _uses_knots(cfg) else None
    return eqx.filter_eval_shape(_build_net, cfg, jr.PRNGKey(0), knots)


def loss_function(
    cfg: ImageConfig, energy: ArrayLike | None = None, images: ArrayLike | None = None
) -> Loss:
    """``loss(model, batch, key)`` of the run's method (see the module docstring).

    ``energy`` (the energies of the whole training set) is needed by ``beta_draw="sample"``,
    whose weights use the exact normaliser ``Z(beta) = mean_i exp(-beta E_i)``, and by
    ``"resample"``, which also needs ``images`` (the training set in model space).
    ``model`` is the run's network; an ``ed`` run with ``ed_param="v"`` wraps it in `EpsFromV`.
    """
    return method(cfg).loss(cfg, energy, images)


def sampler(cfg: ImageConfig) -> Sampler:
    """How the run is sampled: DPM-Solver-2M on noise predictions on the VP path, the
    midpoint rule on velocities on the OT path, ``cfg.sample_steps`` steps."""
    return method(cfg).sampler(cfg)


def guided(cfg: ImageConfig, net: Any, beta: float | None = None, scale: float | None = None):
    """The field to sample: ``net`` steered by ``beta`` or ``scale`` (checked first)."""
    b, w = check_guidance(cfg, beta, scale)
    return method(cfg).guided(cfg, net, b, w)


def condition(cfg: ImageConfig, n: int) -> Array | None:
    """The condition of ``n`` samples of the run (``None``: unconditional)."""
    return method(cfg).cond(cfg, n)
