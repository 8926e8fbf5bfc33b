"""Train, load and sample energy-guided image generators; sweep beta against the exact target.

Methods (all on the same `UNetField`, trained through `ewfm.fit`, sampled with `ewfm.sample`):

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
"""

import dataclasses
import importlib
import json
import math
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._experiment import check_choice, write_text_atomic
from .._losses import cep_loss, cfm_loss, denoising_loss, ed_loss, efm_loss
from .._nets import EnergyNet
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import CFGField, EnergyGuidedField, sample
from .._train import fit, load_checkpoint, save_checkpoint
from .._weights import energy_weights
from ._data import ImageSet, check_dataset, load_dataset, make_shapes
from ._energy import check_target_hue, evaluate_energy, hue_energy, mean_hue
from ._target import hue_class, n_classes
from ._unet import UNetField

METHODS: tuple[str, ...] = ("efm", "ed", "cfg", "cep")
METHOD_DOCS: dict[str, str] = {
    "efm": "energy-weighted flow matching, OT path (beta as an input unless --beta is fixed)",
    "ed": "energy-weighted diffusion, VP path, noise prediction (Algorithm 1)",
    "cfg": "classifier-free guidance on hue classes (baseline), OT path",
    "cep": "gradient guidance (baseline, QGPO's contrastive energy prediction), VP path: an "
    "unguided diffusion model plus an energy net f(x_t, t, beta) whose gradient is added when "
    "sampling",
}
BETA_DRAWS: dict[str, str] = {
    "batch": "one beta per batch, weights softmax-normalised in the batch (Algorithm 6 as written)",
    "groups": "beta_groups betas per batch, each on its own slice with its own softmax",
    "sample": "one beta per image, weights exp(-beta E) / Z(beta) with Z exact over the training "
    "set: EFM on the joint (x, beta) with energy beta E + log Z(beta), beta a condition",
    "resample": "one beta per image, the image drawn from the exact target pi_beta over the "
    "training set (probabilities exp(-beta E) / (N Z(beta))), unweighted: the same objective "
    "as 'sample' without the weights' variance",
}
BETA_NETS: dict[str, str] = {
    "residual": "u(x, t) + (beta / beta_max) r(x, t, beta): u (beta 0, exactly unconditional) "
    "trained by plain flow matching on every image, r by the weighted loss with u held fixed",
    "input": "beta embedded into the whole U-Net (Algorithm 6 as written)",
}
BETA_PHIS: dict[str, str] = {
    "linear": "phi(beta) = beta / beta_max",
    "energy": "phi(beta) = (m(0) - m(beta)) / (m(0) - m(beta_max)), m(beta) the exact target's "
    "mean energy over the training set: the share of the energy shift reached at beta",
}
ED_PARAMS: dict[str, str] = {
    "v": "the U-Net predicts v = alpha eps - sigma x0; eps = sigma x + alpha v (VP has "
    "alpha^2 + sigma^2 = 1)",
    "eps": "the U-Net predicts eps directly",
}
PHI_KNOTS = 65  # grid points of an "energy" phi on [0, beta_max], interpolated linearly
_OT, _VP = OTPath(), VPPath()


def check_method(name: str) -> str:
    """Return ``name`` if it is a known method, else raise a one-line `ValueError`."""
    return check_choice(name, METHODS, "method")


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """Everything that defines a run. `quick` and `showcase` give the two presets."""

    data: str = "shapes"
    size: int = 16
    target_hue: float = 240.0  # degrees; blue
    energy: str = "hue"  # "hue" or "module:function" (images [B,H,W,3] -> energies [B])
    method: str = "efm"
    beta: float | None = None  # None: beta is a network input, beta ~ U[0, beta_max]
    beta_max: float = 10.0
    beta_draw: str = "sample"  # how a beta-input run draws its training betas (BETA_DRAWS)
    beta_zero: float | None = None  # P(beta = 0 exactly); None: 0.25 ("input"), 0 ("residual")
    beta_net: str = "residual"  # where beta enters the network (BETA_NETS)
    beta_phi: str = "linear"  # the residual head's scale phi(beta) (BETA_PHIS)
    ed_param: str = "v"  # what an ed run's U-Net predicts (ED_PARAMS)
    cep_group: int = 16  # images per contrastive group of a cep run (divides batch_size)
    beta_groups: int = 4  # betas per batch for beta_draw="groups"
    beta_scale: float = 1.0  # beta's Fourier features have scale beta_scale / beta_max
    n_data: int = 4096  # procedural images (shapes only)
    held_out: int = 256  # images kept out of training (memorisation check)
    channels: tuple[int, ...] = (16, 32)
    steps: int = 600
    batch_size: int = 64
    learning_rate: float = 2e-3  # Adam, 50 warm-up steps, cosine-decayed to 10%
    steps_per_call: int = 2  # gradient steps compiled into one straight-line epoch (>= 2)
    n_bins: int = 12  # hue bins of 30 degrees (+ one achromatic class)
    cfg_dropout: float = 0.2
    sample_steps: int = 10  # midpoint (OT, 20 evaluations) or DPM-Solver-2M (VP)
    seed: int = 0

    def __post_init__(self):
        check_dataset(self.data)
        check_method(self.method)
        check_target_hue(self.target_hue)
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        for name in ("steps", "batch_size", "n_data", "sample_steps", "n_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps_per_call < 2:
            raise ValueError(f"steps_per_call must be >= 2, got {self.steps_per_call}.")
        if self.beta is not None and not (0.0 <= self.beta < math.inf):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}.")
        check_choice(self.beta_draw, BETA_DRAWS, "beta_draw")
        check_choice(self.beta_net, BETA_NETS, "beta_net")
        check_choice(self.beta_phi, BETA_PHIS, "beta_phi")
        check_choice(self.ed_param, ED_PARAMS, "ed_param")
        if self.method == "cep":
            if self.beta is not None:
                raise ValueError(
                    "cep trains its energy net for every beta in [0, beta_max]: omit beta "
                    "(--beta) for method cep."
                )
            if self.cep_group < 2 or self.batch_size % self.cep_group:
                raise ValueError(
                    f"cep_group must be >= 2 and divide batch_size {self.batch_size}, "
                    f"got {self.cep_group}."
                )
        if self.beta_zero is None:
            object.__setattr__(self, "beta_zero", 0.0 if self.beta_net == "residual" else 0.25)
        assert self.beta_zero is not None
        if self.beta_net == "residual" and self.beta_draw == "resample":
            raise ValueError(
                'beta_draw="resample" needs beta_net="input" (the residual net trains u on '
                "the batch's own images); use beta_draw sample, batch or groups."
            )
        if not (0.0 <= self.beta_zero <= 1.0):
            raise ValueError(f"beta_zero must lie in [0, 1], got {self.beta_zero}.")
        if self.beta_groups < 1 or self.batch_size % self.beta_groups:
            raise ValueError(
                f"beta_groups must divide batch_size {self.batch_size}, got {self.beta_groups}."
            )
        if not (0.0 < self.beta_scale < math.inf):
            raise ValueError(f"beta_scale must be a finite number > 0, got {self.beta_scale}.")
        if not (0.0 < self.beta_max < math.inf):
            raise ValueError(f"beta_max must be a finite number > 0, got {self.beta_max}.")
        if self.data == "twemoji" and self.size not in (16, 32, 64):
            raise ValueError(f"twemoji size must be 16, 32 or 64, got {self.size}.")
        if self.size % 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"size {self.size} must be divisible by 2**{len(self.channels) - 1} "
                f"for channels {self.channels}."
            )

    @classmethod
    def quick(cls, **overrides: Any) -> "ImageConfig":
        """16x16 images (procedural shapes unless ``data`` says otherwise), a 16/32-channel
        U-Net, 600 steps of batch 64: a few minutes on 2 CPU cores."""
        base: dict[str, Any] = {"size": 16, "channels": (16, 32), "steps": 600}
        base.update(overrides)
        return cls(**base)

    @classmethod
    def showcase(cls, **overrides: Any) -> "ImageConfig":
        """32x32 Twemoji, a 16/32/32-channel U-Net, 1,200 steps of batch 32 (about half an
        hour on 2 shared CPU cores). Target hue 210: Twemoji's blue (#55ACEE is 206 degrees)."""
        base: dict[str, Any] = {
            "data": "twemoji",
            "size": 32,
            "channels": (16, 32, 32),
            "steps": 1200,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "target_hue": 210.0,
        }
        base.update(overrides)
        return cls(**base)

    @property
    def beta_input(self) -> bool:
        """Whether beta is a network input (Algorithm 6)."""
        return self.method in ("efm", "ed", "cep") and self.beta is None

    @property
    def beta_residual(self) -> bool:
        """Whether beta enters through the residual head (see `BETA_NETS`)."""
        return self.method != "cep" and self.beta_input and self.beta_net == "residual"

    @property
    def path(self) -> AbstractPath:
        return _VP if self.method in ("ed", "cep") else _OT

    @property
    def sampler(self) -> tuple[str, str]:
        """``(solver, prediction)`` of `ewfm.sample`: DPM-Solver-2M on noise predictions on
        the VP path, the midpoint rule on velocities on the OT path."""
        return ("dpm2", "eps") if isinstance(self.path, VPPath) else ("midpoint", "velocity")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ImageConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["channels"] = tuple(kw.get("channels", cls.channels))  # JSON has lists
        kw.setdefault("beta_net", "input")  # runs written before beta_net existed
        kw.setdefault("beta_phi", "linear")  # runs written before beta_phi existed
        kw.setdefault("ed_param", "eps")  # runs written before ed_param existed
        for k in (
            "target_hue",
            "beta_max",
            "beta_zero",
            "beta_scale",
            "learning_rate",
            "cfg_dropout",
        ):
            if k in kw:
                kw[k] = float(kw[k])
        if kw.get("beta") is not None:
            kw["beta"] = float(kw["beta"])
        return cls(**kw)


# ----------------------------------------------------------------------------- data


def resolve_energy(spec: str, target_hue: float) -> Callable[[np.ndarray], Any]:
    """The energy function: ``"hue"`` (`hue_energy` at ``target_hue``) or ``"module:function"``.

    A user function takes images ``[B, H, W, 3]`` (RGB in [0, 1]) and returns ``[B]`` values;
    it need not be differentiable.
    """
    if spec == "hue":
        return lambda x: hue_energy(x, target_hue)
    mod, sep, name = spec.partition(":")
    if not sep or not mod or not name:
        raise ValueError(f"energy must be 'hue' or 'module:function', got {spec!r}.")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load energy {spec!r}: {e}.") from None
    if not callable(fn):
        raise ValueError(f"energy {spec!r} is not callable.")
    return fn


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The training images with their energies and hue classes, and held-out images."""

    images: np.ndarray
    energy: np.ndarray
    classes: np.ndarray
    held_out: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]


def batched_energy(fn: Callable, images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Energies of many images, 1024 at a time (checked: one finite value per image)."""
    return np.concatenate(
        [evaluate_energy(fn, images[i : i + 1024], shape) for i in range(0, len(images), 1024)]
    )


def image_classes(images: np.ndarray, n_bins: int) -> np.ndarray:
    """Hue class of each image (`hue_class` of its chroma-weighted mean hue)."""
    out = []
    for i in range(0, len(images), 1024):
        h, c = mean_hue(images[i : i + 1024])
        out.append(hue_class(np.asarray(h), np.asarray(c), n_bins))
    return np.concatenate(out)


def training_set(cfg: ImageConfig, on_image: Callable[[int], None] | None = None) -> TrainingSet:
    """Load ``cfg.data`` and split off ``cfg.held_out`` images (a seeded permutation).

    For ``shapes`` the held-out images are fresh draws (another seed), so the training set
    keeps all ``n_data`` images.
    """
    ds: ImageSet = load_dataset(cfg.data, cfg.size, n=cfg.n_data, seed=cfg.seed, on_image=on_image)
    if cfg.data == "shapes":
        train = ds.images
        held = make_shapes(cfg.held_out, cfg.size, seed=cfg.seed + 10_007).images
    else:
        if cfg.held_out >= len(ds):
            raise ValueError(f"held_out {cfg.held_out} must be below the {len(ds)} images.")
        idx = np.random.default_rng(cfg.seed).permutation(len(ds))
        train, held = ds.images[idx[cfg.held_out :]], ds.images[idx[: cfg.held_out]]
    fn = resolve_energy(cfg.energy, cfg.target_hue)
    shape = (cfg.size, cfg.size, 3)
    return TrainingSet(
        train, batched_energy(fn, train, shape), image_classes(train, cfg.n_bins), held
    )


def to_model_space(images: np.ndarray) -> Array:
    """Images in [0, 1] ``[N, H, W, 3]`` -> flat vectors in [-1, 1] ``[N, H*W*3]``."""
    return jnp.asarray(2.0 * images.reshape(images.shape[0], -1) - 1.0, jnp.float32)


def to_images(x: Array, size: int) -> np.ndarray:
    """Flat model outputs -> images in [0, 1] ``[N, size, size, 3]`` (clipped)."""
    return np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0).reshape(-1, size, size, 3)


# ----------------------------------------------------------------------------- training


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


def _build_net(cfg: ImageConfig, key: PRNGKeyArray, phi_knots: Any = None) -> Any:
    if cfg.method == "cep":
        kf, ke = jr.split(key)
        field = UNetField(cfg.size, channels=cfg.channels, key=kf)
        energy = EnergyNet(cfg.size * cfg.size * 3, cond_dim=1, key=ke)
        return CEPNets(field, energy, float(cfg.beta_max))
    return UNetField(
        cfg.size,
        channels=cfg.channels,
        cond_dim=n_classes(cfg.n_bins) if cfg.method == "cfg" else 0,
        beta_input=cfg.beta_input,
        beta_max=cfg.beta_max,
        beta_scale=cfg.beta_scale,
        beta_residual=cfg.beta_residual,
        phi_knots=phi_knots,
        key=key,
    )


def _uses_knots(cfg: ImageConfig) -> bool:
    return cfg.beta_residual and cfg.beta_phi == "energy"


def init_net(cfg: ImageConfig, key: PRNGKeyArray, energy: Any = None) -> Any:
    """The untrained U-Net of a run; ``energy`` (the training set's energies) fixes the
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
    """The run's U-Net with `jax.ShapeDtypeStruct` leaves: what a checkpoint is read into,
    without computing an initialisation that would be overwritten."""
    knots = np.zeros(PHI_KNOTS, np.float32) if _uses_knots(cfg) else None
    return eqx.filter_eval_shape(_build_net, cfg, jr.PRNGKey(0), knots)


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
        return self.net.phi(beta)


def _as_field(cfg: ImageConfig, net: Any) -> Any:
    """The run's (unguided, for ``cep``) field for the loss and the sampler: ``net``, or
    `EpsFromV` around the U-Net where it predicts ``v`` (``ed`` with ``ed_param="v"``, and
    ``cep``'s ``net.field``)."""
    if isinstance(net, CEPNets):
        return EpsFromV(net.field, _VP)
    if cfg.method == "ed" and cfg.ed_param == "v":
        return EpsFromV(net, _VP)
    return net


def _draw_betas(cfg: ImageConfig, key: PRNGKeyArray, n: int) -> Array:
    """``n`` training betas: ``U[0, beta_max]``, or exactly 0 with probability ``beta_zero``."""
    ku, kz = jr.split(key)
    b = jr.uniform(ku, (n,), maxval=cfg.beta_max)
    if cfg.beta_zero:
        b = jnp.where(jr.bernoulli(kz, cfg.beta_zero, (n,)), 0.0, b)
    return b


def loss_function(
    cfg: ImageConfig, energy: Any = None, images: Any = None
) -> Callable[[Any, dict, PRNGKeyArray], Array]:
    """``loss(model, batch, key)`` of the run's method (see the module docstring).

    ``energy`` (the energies of the whole training set) is needed by ``beta_draw="sample"``,
    whose weights use the exact normaliser ``Z(beta) = mean_i exp(-beta E_i)``, and by
    ``"resample"``, which also needs ``images`` (the training set in model space).
    ``model`` is the U-Net; an ``ed`` run with ``ed_param="v"`` wraps it in `EpsFromV`.
    """
    inner = _loss_of_field(cfg, energy, images)
    if cfg.method == "ed":
        return lambda model, batch, key: inner(_as_field(cfg, model), batch, key)
    return inner


def _loss_of_field(
    cfg: ImageConfig, energy: Any, images: Any
) -> Callable[[Any, dict, PRNGKeyArray], Array]:
    path = cfg.path
    weighted = efm_loss if cfg.method == "efm" else ed_loss

    if cfg.method == "cep":
        return _cep_loss(cfg)
    if cfg.method == "cfg":
        dropout = cfg.cfg_dropout

        def cfg_loss(model, batch, key):
            kd, kt = jr.split(key)
            keep = 1.0 - jr.bernoulli(kd, dropout, batch["energy"].shape).astype(jnp.float32)
            return cfm_loss(model, path, batch["x"], kt, cond=batch["onehot"] * keep[:, None])

        return cfg_loss
    if not cfg.beta_input:
        beta = float(cfg.beta)  # type: ignore[arg-type]
        return lambda model, batch, key: weighted(
            model, path, batch["x"], batch["energy"], beta, key
        )
    if cfg.beta_draw in ("sample", "resample") and energy is None:
        raise ValueError(f'beta_draw="{cfg.beta_draw}" needs the training energies (energy=...).')
    if cfg.beta_residual:
        return _residual_loss(cfg, energy)
    if cfg.beta_draw == "batch":

        def batch_loss(model, batch, key):
            kb, kt = jr.split(key)
            b = _draw_betas(cfg, kb, 1)[0]  # Algorithm 6: one beta per batch
            return weighted(eqx.Partial(model, beta=b), path, batch["x"], batch["energy"], b, kt)

        return batch_loss
    if cfg.beta_draw == "groups":
        g = cfg.beta_groups

        def groups_loss(model, batch, key):
            kb, kt = jr.split(key)
            b = _draw_betas(cfg, kb, g)
            x = batch["x"].reshape(g, -1, batch["x"].shape[-1])
            e = batch["energy"].reshape(g, -1)

            def one(xg, eg, bg, kg):
                return weighted(eqx.Partial(model, beta=bg), path, xg, eg, bg, kg)

            return jnp.mean(jax.vmap(one)(x, e, b, jr.split(kt, g)))

        return groups_loss
    all_e = jnp.asarray(energy, jnp.float32)

    def field(model):  # beta travels as a one-element condition, one per image
        return lambda x, t, c: model(x, t, None, beta=c[0])

    if cfg.beta_draw == "resample":
        if images is None:
            raise ValueError('beta_draw="resample" needs the training images (images=...).')
        all_x = jnp.asarray(images, jnp.float32)

        def resample_loss(model, batch, key):
            kb, ki, kt = jr.split(key, 3)
            b = _draw_betas(cfg, kb, batch["x"].shape[0])
            idx = jr.categorical(ki, -b[:, None] * all_e[None, :])  # one draw from pi_beta each
            zero = jnp.zeros_like(b)  # weights all 1: the draw itself is the reweighting
            return weighted(field(model), path, all_x[idx], zero, 0.0, kt, cond=b[:, None])

        return resample_loss

    def sample_loss(model, batch, key):
        kb, kt = jr.split(key)
        b = _draw_betas(cfg, kb, batch["x"].shape[0])
        log_z = _log_z(b, all_e)
        # EFM on the joint (x, beta) at beta 1: weight exp(-beta E) / Z(beta) per image
        joint_e = b * batch["energy"] + log_z
        return weighted(field(model), path, batch["x"], joint_e, 1.0, kt, cond=b[:, None])

    return sample_loss


def _cep_loss(cfg: ImageConfig) -> Callable[[Any, dict, PRNGKeyArray], Array]:
    """`ewfm.denoising_loss` of the unguided field plus `ewfm.cep_loss` of the energy net: the
    batch is cut into groups of ``cep_group`` images, each group with its own beta
    ``U[0, beta_max]`` (given to the net, and the temperature of its contrastive target)."""
    path, m = cfg.path, cfg.cep_group

    def loss(model: CEPNets, batch, key):
        kf, kb, kc = jr.split(key, 3)
        x, e = batch["x"], batch["energy"]
        g = x.shape[0] // m
        betas = _draw_betas(cfg, kb, g)

        def group(xg, eg, b, k):
            f = lambda y, t, c: model.f(y, t, b)
            return cep_loss(f, path, xg[None], eg[None], b, k)

        contrastive = jax.vmap(group)(x.reshape(g, m, -1), e.reshape(g, m), betas, jr.split(kc, g))
        return denoising_loss(_as_field(cfg, model), path, x, kf) + jnp.mean(contrastive)

    return loss


def _log_z(b: Array, all_e: Array) -> Array:
    """``log Z(beta) = log mean_i exp(-beta E_i)`` over the training set, per beta."""
    return jax.nn.logsumexp(-b[:, None] * all_e[None, :], axis=1) - math.log(all_e.shape[0])


def _residual_loss(cfg: ImageConfig, energy: Any) -> Callable[[Any, dict, PRNGKeyArray], Array]:
    """The residual-beta loss: ``L_u + L_r`` on one draw of ``(t, eps)`` and one network pass.

    ``L_u = mean ||u - target||^2`` (plain flow matching / denoising on every image: ``u``
    becomes the unguided field) and ``L_r = mean w_i ||sg(u) + phi(beta_i) r - target||^2``
    with the model's ``phi`` (`UNetField.phi`) and the weights of ``cfg.beta_draw`` (``sg``:
    stop gradient). For every beta > 0 the minimiser of ``L_r`` is ``u + phi r = `` the guided
    field. The loss never weights ``u`` itself; in the U-Net the head reads the shared
    trunk's features, so ``L_r`` still reaches ``u`` through the trunk.
    """
    path, draw = cfg.path, cfg.beta_draw
    goal_name = "eps" if cfg.method == "ed" else "velocity"
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


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclasses.dataclass
class ImageRun:
    """A trained run: its config, its EMA network and what training recorded."""

    cfg: ImageConfig
    net: "UNetField | CEPNets"
    info: dict[str, Any]


def train(
    cfg: ImageConfig,
    out: str | Path | None = None,
    *,
    data: TrainingSet | None = None,
    progress: bool = False,
) -> ImageRun:
    """Train the run ``cfg`` for ``cfg.steps`` steps; with ``out`` write its run directory.

    The run directory holds ``config.json``, ``model.eqx`` (the EMA network, via
    `ewfm.save_checkpoint`) and ``metrics.json`` (wall and CPU seconds, losses), all atomic.
    """
    ts = training_set(cfg) if data is None else data
    key = jr.PRNGKey(cfg.seed)
    kinit, ktrain = jr.split(key)
    net = init_net(cfg, kinit, ts.energy)
    epochs = math.ceil(cfg.steps / cfg.steps_per_call)
    total = epochs * cfg.steps_per_call
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(50, total // 10 + 1), total, cfg.learning_rate * 0.1
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    onehot = np.eye(n_classes(cfg.n_bins), dtype=np.float32)[ts.classes]
    arrays = {
        "x": to_model_space(ts.images),
        "energy": jnp.asarray(ts.energy, jnp.float32),
        "onehot": jnp.asarray(onehot),
    }
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    result = fit(
        net,
        loss_function(cfg, ts.energy, arrays["x"]),
        arrays,
        key=ktrain,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=cfg.batch_size,
        steps_per_epoch=cfg.steps_per_call,
        ema_decay=min(0.999, 1.0 - 10.0 / total),
        progress=progress,
        description=f"{cfg.method} on {cfg.data} {cfg.size}x{cfg.size}",
        unroll=True,
    )
    losses = [h["loss"] for h in result.history]
    info = {
        "steps": total,
        "train_wall_s": time.perf_counter() - wall0,
        "train_cpu_s": _cpu_seconds() - cpu0,
        "n_train": len(ts),
        "n_params": int(
            sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_array)))
        ),
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last_10pct": float(np.mean(losses[-max(1, len(losses) // 10) :]))
        if losses
        else float("nan"),
        "data_mean_energy": float(np.mean(ts.energy)),
    }
    run = ImageRun(cfg, result.state.ema, info)
    if out is not None:
        save_run(run, out)
    return run


def save_run(run: ImageRun, out: str | Path) -> None:
    """Write ``config.json``, ``model.eqx`` and ``metrics.json`` into ``out`` (atomically)."""
    out = Path(out)
    write_text_atomic(out / "config.json", json.dumps(run.cfg.to_json(), indent=2) + "\n")
    save_checkpoint(out / "model.eqx", run.net, {"config": run.cfg.to_json()})
    write_text_atomic(out / "metrics.json", json.dumps({"train": run.info}, indent=2) + "\n")


def load_run(out: str | Path) -> ImageRun:
    """Read a run directory written by `train`."""
    out = Path(out)
    if not (out / "config.json").is_file() or not (out / "model.eqx").is_file():
        raise FileNotFoundError(
            f"{out} is not a run directory (needs config.json and model.eqx); "
            "create one with `ewfm images train --out DIR`."
        )
    cfg = ImageConfig.from_json(json.loads((out / "config.json").read_text()))
    net, _ = load_checkpoint(out / "model.eqx", net_structure(cfg))
    metrics = (
        json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    )
    return ImageRun(cfg, net, metrics.get("train", {}))


# ----------------------------------------------------------------------------- sampling


def check_sampling_beta(cfg: ImageConfig, beta: float | None) -> float | None:
    """The beta to sample at: any in ``[0, beta_max]`` for a beta-input run, the training
    beta for a fixed-beta run; a one-line `ValueError` otherwise."""
    if cfg.method == "cfg":
        return None
    if cfg.beta_input:
        if beta is None:
            raise ValueError(
                f"this run takes beta as an input: pass beta in [0, {cfg.beta_max:g}]."
            )
        if not (0.0 <= beta <= cfg.beta_max):
            raise ValueError(
                f"beta must lie in [0, {cfg.beta_max:g}] (the range this run was trained on), "
                f"got {beta:g}."
            )
        return float(beta)
    if beta is not None and beta != cfg.beta:
        raise ValueError(
            f"this run was trained at fixed beta={cfg.beta:g}; sample it at that beta or "
            "train with beta as an input (omit --beta when training)."
        )
    return cfg.beta


def guided_field(run: ImageRun, beta: float | None = None, scale: float | None = None) -> Any:
    """The field to sample: the net at ``beta`` (efm/ed), CFG at ``scale`` (cfg), or the
    unguided noise prediction plus the energy net's gradient at ``beta`` (cep)."""
    cfg, net = run.cfg, run.net
    b = check_sampling_beta(cfg, beta)
    if isinstance(net, CEPNets):
        energy = _EnergyAtBeta(net, jnp.asarray(b, jnp.float32))
        return EnergyGuidedField(_as_field(cfg, net), energy, _VP, 1.0, "eps")
    if cfg.method == "cfg":
        w = 1.0 if scale is None else scale
        return CFGField(net, jnp.asarray(w, jnp.float32), jnp.zeros(n_classes(cfg.n_bins)))
    field = _as_field(cfg, net)
    if cfg.beta_input:
        return eqx.Partial(field, beta=jnp.asarray(b, jnp.float32))
    return field


def target_class(cfg: ImageConfig) -> int:
    """The hue class CFG conditions on: the bin containing the target hue."""
    return int(hue_class(np.array([cfg.target_hue]), np.array([True]), cfg.n_bins)[0])


@eqx.filter_jit
def _draw(field, path, key, cond, n: int, dim: int, solver: str, steps: int, prediction: str):
    return sample(
        field, path, key, (n, dim), cond, solver=solver, steps=steps, prediction=prediction
    ).x  # type: ignore[arg-type]


def generate(
    run: ImageRun,
    key: PRNGKeyArray,
    n: int,
    *,
    beta: float | None = None,
    scale: float | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """``n`` images ``[n, H, W, 3]`` in [0, 1] from a run, ``chunk`` at a time (one compile).

    efm/ed: at ``beta`` (any value in ``[0, beta_max]`` for a beta-input run); cfg: at
    guidance scale ``scale`` (default 1) towards the target hue's class. OT runs use the
    midpoint rule, VP runs DPM-Solver-2M, each with ``cfg.sample_steps`` steps.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    cfg = run.cfg
    field = guided_field(run, beta, scale)
    dim = cfg.size * cfg.size * 3
    solver, pred = cfg.sampler
    cond = None
    if cfg.method == "cfg":
        cond = jnp.zeros((chunk, n_classes(cfg.n_bins))).at[:, target_class(cfg)].set(1.0)
    out = []
    for i in range(math.ceil(n / chunk)):
        x = _draw(
            field, cfg.path, jr.fold_in(key, i), cond, chunk, dim, solver, cfg.sample_steps, pred
        )
        out.append(to_images(x, cfg.size))
    return np.concatenate(out)[:n]


def time_generation(run: ImageRun, n: int = 64, **kwargs: Any) -> float:
    """Wall seconds to draw ``n`` images, after a compile-and-warm-up call."""
    generate(run, jr.PRNGKey(1), n, chunk=n, **kwargs)
    t0 = time.perf_counter()
    generate(run, jr.PRNGKey(2), n, chunk=n, **kwargs)
    return time.perf_counter() - t0


def default_betas(cfg: ImageConfig) -> Sequence[float]:
    """The sweep's betas: 0, 1, 3, 10 capped at beta_max (or the run's fixed beta)."""
    if cfg.method != "cfg" and not cfg.beta_input:
        return (float(cfg.beta),)  # type: ignore[arg-type]
    return tuple(b for b in (0.0, 1.0, 3.0, 10.0) if b <= cfg.beta_max)
