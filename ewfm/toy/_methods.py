"""The guided-generation methods of the toy suite (`METHODS`), all built from the core API.

- ``fm``: unguided conditional flow matching on the OT path (the reference).
- ``efm``: energy-weighted flow matching ``L_CEFM`` on the OT path (Theorem 4.3).
- ``ed``: energy-weighted diffusion ``L_CED`` on the VP path, noise prediction (Algorithm 1).
- ``efm-beta``: one EFM network for all ``beta in [0, beta_max]`` with beta as an input
  (Algorithm 6), sampled with ``eqx.Partial(field, beta=b)``.
- ``qgpo``: QGPO / CEP: a VP behaviour model (plain denoising) plus an `EnergyNet` trained by
  contrastive energy prediction, combined by gradient guidance (`EnergyGuidedField`).
- ``cfg``: classifier-free guidance. Labels ``c ~ Bernoulli(exp(-(E - E_min)))`` are drawn
  per batch, so ``E = -log p(c=1|x) + const`` and ``p(x|c=1) = pi`` at ``beta = 1``
  (Lemma 4.11); sampling uses guidance scale ``w = beta`` (`CFGField`), exact only at
  ``beta`` in {0, 1} (Lemma 4.10: CFG does not sample ``p p(c|x)^w`` otherwise).

A method is a list of networks, each a *kind* of training (`KINDS`: a loss and an initial
network) at some beta, and a guided field assembled from them. Every network has the same
size and the same number of gradient steps (the training budget). Each kind compiles once:
``beta`` travels with the data, so one compiled epoch serves every data set and every beta.
Adding a method touches `METHODS` in ``_config.py`` and `_RECIPES` here.
"""

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._experiment import check_choice
from .._likelihood import log_likelihood
from .._losses import cep_loss, cfm_loss, ed_loss, efm_loss
from .._nets import EnergyNet, MLPField
from .._paths import OTPath, VPPath
from .._sample import CFGField, EnergyGuidedField, Sampler
from .._train import init_state, make_epoch
from ._config import METHODS, ToyConfig, check_method

_OT = OTPath()
_VP = VPPath()


class ToyModel(eqx.Module):
    """A trained (possibly guided) field and the `ewfm.Sampler` that draws from it."""

    field: Any
    sampler: Sampler


class _FixedCond(eqx.Module):
    """A field with its condition bound (so the sampler and the likelihood need none)."""

    field: Any
    cond: Array

    def __call__(self, x: Array, t: ArrayLike, cond: Array | None = None) -> Array:
        return self.field(x, t, self.cond)


# --------------------------------------------------------------------------- kinds of training


def _loss_ot(model, batch, key):
    return efm_loss(model, _OT, batch["x"], batch["energy"], batch["beta"][0], key)


def _loss_vp(model, batch, key):
    return ed_loss(model, _VP, batch["x"], batch["energy"], batch["beta"][0], key)


def _loss_efm_beta(model, batch, key):
    kb, kt = jr.split(key)
    b = jr.uniform(kb, (), maxval=batch["beta"][0])  # Algorithm 6: one beta per batch
    return efm_loss(eqx.Partial(model, beta=b), _OT, batch["x"], batch["energy"], b, kt)


def _loss_cep(group: int) -> Callable:
    def loss(net, batch, key):
        x, e = batch["x"], batch["energy"]
        g = x.shape[0] // group
        return cep_loss(
            net, _VP, x.reshape(g, group, -1), e.reshape(g, group), batch["beta"][0], key
        )

    return loss


def _loss_cfg(dropout: float) -> Callable:
    def loss(model, batch, key):
        kc, kd, kt = jr.split(key, 3)
        x, e = batch["x"], batch["energy"]
        c = jr.bernoulli(kc, jnp.exp(-(e - batch["emin"]))).astype(x.dtype)
        keep = 1.0 - jr.bernoulli(kd, dropout, c.shape).astype(x.dtype)
        cond = jnp.stack([c, 1.0 - c], axis=-1) * keep[:, None]  # null condition = zeros
        return cfm_loss(model, _OT, x, kt, cond=cond)

    return loss


def _mlp(**kw: Any) -> Callable[[ToyConfig, PRNGKeyArray], Any]:
    return lambda cfg, key: MLPField(2, width=cfg.width, depth=cfg.depth, key=key, **kw)


def _mlp_beta(cfg: ToyConfig, key: PRNGKeyArray) -> Any:
    scale = 1.0 / cfg.beta_max  # beta in [0, beta_max] -> embedding phases of order one
    return MLPField(2, beta_input=True, beta_scale=scale, width=cfg.width, depth=cfg.depth, key=key)


@dataclasses.dataclass(frozen=True)
class _Kind:
    """One kind of training: its loss (built from the config) and its initial network."""

    loss: Callable[[ToyConfig], Callable]
    init: Callable[[ToyConfig, PRNGKeyArray], Any]


_KINDS: dict[str, _Kind] = {
    "ot": _Kind(lambda c: _loss_ot, _mlp()),
    "vp": _Kind(lambda c: _loss_vp, _mlp()),
    "cep": _Kind(
        lambda c: _loss_cep(c.cep_group),
        lambda c, key: EnergyNet(2, width=c.width, depth=c.depth, key=key),
    ),
    "cfg": _Kind(lambda c: _loss_cfg(c.cfg_dropout), _mlp(cond_dim=2)),
    "efm-beta": _Kind(lambda c: _loss_efm_beta, _mlp_beta),
}
KINDS: tuple[str, ...] = tuple(_KINDS)


def _chunk(steps: int) -> tuple[int, int]:
    """Split ``steps`` into ``n`` compiled epochs of ``size`` steps (for progress updates)."""
    n = max(1, math.ceil(steps / 250))
    return n, math.ceil(steps / n)


def _training_part(cfg: ToyConfig) -> ToyConfig:
    """``cfg`` with the fields training does not read reset, so one compiled epoch serves
    every run that differs only in data set, method, beta, evaluation or sampling."""
    return ToyConfig(
        steps=cfg.steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        cep_group=cfg.cep_group, cfg_dropout=cfg.cfg_dropout,
    )  # fmt: skip


@functools.cache
def _epoch_fn(kind: str, cfg: ToyConfig) -> tuple[Callable, optax.GradientTransformation]:
    n, size = _chunk(cfg.steps)
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, n * size, alpha=0.1)
    opt = optax.adam(schedule)
    ema = min(0.999, max(0.0, 1.0 - 10.0 / (n * size)))  # below 10 steps: no averaging
    loss = _KINDS[kind].loss(cfg)
    return make_epoch(loss, opt, batch_size=cfg.batch_size, steps=size, ema_decay=ema), opt


def train_network(
    kind: str,
    x: Float[Array, "n 2"],
    energy: Float[Array, " n"],
    beta: float,
    cfg: ToyConfig,
    key: PRNGKeyArray,
    *,
    on_steps: Callable[[int], None] | None = None,
) -> Any:
    """Train one network of ``kind`` (see `KINDS`) for ``cfg.steps`` steps; return its EMA.

    ``ot``: EFM on the OT path (``beta = 0`` is plain flow matching); ``vp``: ED on the VP
    path (``beta = 0`` is the QGPO behaviour model); ``cep``: the CEP energy net at ``beta``;
    ``cfg``: the conditional + unconditional CFG field; ``efm-beta``: Algorithm 6 with
    ``beta_max = beta``. ``on_steps(k)`` is called after every ``k`` finished steps.
    """
    check_choice(kind, KINDS, "kind")
    epoch, opt = _epoch_fn(kind, _training_part(cfg))
    kinit, ktrain = jr.split(key)
    state = init_state(_KINDS[kind].init(cfg, kinit), opt)
    n = x.shape[0]
    data = {
        "x": x,
        "energy": energy,
        "beta": jnp.full((n,), beta, x.dtype),
        "emin": jnp.full((n,), jnp.min(energy), x.dtype),
    }
    n_chunks, size = _chunk(cfg.steps)
    for i in range(n_chunks):
        state, losses = epoch(state, data, jr.fold_in(ktrain, i))
        if not bool(jnp.all(jnp.isfinite(losses))):
            raise FloatingPointError(
                f"training {kind} at beta={beta} diverged (non-finite loss); lower the "
                "learning rate."
            )
        if on_steps is not None:
            on_steps(size)
    return state.ema


# --------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """How a method is made: the path it samples on, the networks it trains as ``(kind,
    beta)`` pairs for guidance ``beta``, and the field it assembles from them."""

    path: str  # "ot" or "vp"
    nets: Callable[[float, ToyConfig], tuple[tuple[str, float], ...]]
    field: Callable[..., Any]  # field(beta as an array, *networks)


def _guided_by_energy(b: Array, behaviour: Any, energy_net: Any) -> Any:
    return EnergyGuidedField(behaviour, energy_net, _VP, jnp.asarray(1.0), "eps")


def _cfg_field(b: Array, net: Any) -> Any:
    return _FixedCond(CFGField(net, b, jnp.zeros(2)), jnp.array([1.0, 0.0]))


_RECIPES: dict[str, _Recipe] = {
    "efm": _Recipe("ot", lambda b, c: (("ot", b),), lambda b, net: net),
    "ed": _Recipe("vp", lambda b, c: (("vp", b),), lambda b, net: net),
    "qgpo": _Recipe("vp", lambda b, c: (("vp", 0.0), ("cep", b)), _guided_by_energy),
    "fm": _Recipe("ot", lambda b, c: (("ot", 0.0),), lambda b, net: net),
    "cfg": _Recipe("ot", lambda b, c: (("cfg", 0.0),), _cfg_field),
    "efm-beta": _Recipe(
        "ot",
        lambda b, c: (("efm-beta", max(c.beta_max, b)),),
        lambda b, net: eqx.Partial(net, beta=b),
    ),
}
assert tuple(_RECIPES) == tuple(METHODS), "every method needs a recipe, in METHODS' order"


def networks(method: str, beta: float, cfg: ToyConfig) -> tuple[tuple[str, float], ...]:
    """The networks ``method`` trains for guidance ``beta``: ``(kind, beta)`` pairs.

    Networks that do not depend on beta (fm, cfg, efm-beta, the QGPO behaviour model) are
    listed at a fixed beta, so a sweep trains them once.
    """
    return _RECIPES[check_method(method)].nets(beta, cfg)


def nets_used(method: str) -> tuple[str, ...]:
    """The kinds of networks ``method`` trains (for cost accounting)."""
    return tuple(kind for kind, _ in networks(method, 0.0, ToyConfig()))


def sampler(method: str, cfg: ToyConfig) -> Sampler:
    """How ``method`` is sampled: the OT path with ``cfg.ot_solver`` (velocity), or the VP
    path with ``cfg.vp_solver`` (noise prediction)."""
    if _RECIPES[check_method(method)].path == "ot":
        return Sampler(_OT, cfg.ot_solver, cfg.ot_steps, "velocity")
    return Sampler(_VP, cfg.vp_solver, cfg.vp_steps, "eps")


def build_model(
    method: str,
    beta: float,
    cfg: ToyConfig,
    get: Callable[[str, float], Any],
) -> ToyModel:
    """Assemble the model of ``method`` at ``beta`` from trained networks.

    ``get(kind, beta)`` returns a trained network (see `train_network`); a sweep caches it so
    that networks that do not depend on ``beta`` are trained once (see `networks`).
    """
    nets = [get(kind, b) for kind, b in networks(method, beta, cfg)]
    field = _RECIPES[method].field(jnp.asarray(beta, dtype=float), *nets)
    return ToyModel(field, sampler(method, cfg))


# --------------------------------------------------------------------------- sampling


@eqx.filter_jit
def _draw(model: ToyModel, key: PRNGKeyArray, n: int) -> Array:
    return model.sampler(model.field, key, (n, 2))


def draw(model: ToyModel, key: PRNGKeyArray, n: int) -> Float[Array, "n 2"]:
    """``n`` samples of a toy model (compiled once per method kind and size)."""
    return _draw(model, key, n)


def time_sampling(model: ToyModel, key: PRNGKeyArray, n: int = 1000, repeats: int = 3) -> float:
    """Best wall-clock seconds of drawing ``n`` samples, after a compile-and-warm-up call."""
    draw(model, key, n).block_until_ready()
    best = math.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        draw(model, jr.fold_in(key, r), n).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return best


@eqx.filter_jit
def _log_lik(model: ToyModel, x: Array) -> Array:
    return log_likelihood(
        model.field,
        model.sampler.path,
        x,
        prediction=model.sampler.prediction,  # pyright: ignore[reportArgumentType]
        rtol=1e-4,
        atol=1e-4,
    )


def model_log_likelihood(model: ToyModel, x: Float[Array, "n 2"]) -> Float[Array, " n"]:
    """Exact log-density of ``x`` under a toy model (`ewfm.log_likelihood`, rtol 1e-4)."""
    return _log_lik(model, x)
