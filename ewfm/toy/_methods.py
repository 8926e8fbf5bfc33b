"""The guided-generation methods of the toy suite, all built from the core API.

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

Every network has the same size and the same number of gradient steps (the training
budget). Each *kind* of training compiles once: ``beta`` travels with the data, so one
compiled epoch serves every data set and every ``beta``.
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
from .._paths import AbstractPath, OTPath, VPPath
from .._sample import CFGField, EnergyGuidedField, sample
from .._train import init_state, make_epoch

METHODS: tuple[str, ...] = ("efm", "ed", "qgpo", "fm", "cfg", "efm-beta")

METHOD_DOCS: dict[str, str] = {
    "efm": "energy-weighted flow matching, OT path",
    "ed": "energy-weighted diffusion, VP path (Algorithm 1)",
    "qgpo": "QGPO/CEP: behaviour diffusion + contrastive energy net, gradient guidance",
    "fm": "unguided flow matching (reference)",
    "cfg": "classifier-free guidance on c ~ Bernoulli(exp(-(E - E_min))), scale w = beta",
    "efm-beta": "one EFM net with beta as an input, trained on beta ~ U[0, beta_max]",
}

_OT = OTPath()
_VP = VPPath()


def check_method(name: str) -> str:
    """Return ``name`` if it is a known method, else raise a one-line `ValueError`."""
    return check_choice(name, METHODS, "method")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    """Sizes of one toy experiment. `quick` gives the small version used by tests."""

    n_data: int = 20_000  # the finite data set (uniform p over these points)
    steps: int = 3_000  # gradient steps per trained network (the training budget)
    batch_size: int = 256
    learning_rate: float = 3e-3  # Adam, cosine-decayed to 10%
    width: int = 128
    depth: int = 3
    cep_group: int = 16  # CEP: K samples per contrastive group
    beta_max: float = 10.0  # efm-beta trains on beta ~ U[0, beta_max]
    cfg_dropout: float = 0.2  # CFG: probability of the null condition
    n_eval: int = 2_000  # samples per model and per exact target set
    n_nll: int = 500  # exact target samples scored by the log-likelihood
    ot_solver: str = "midpoint"  # RK2, as QIPO-OT
    ot_steps: int = 10  # 20 field evaluations
    vp_solver: str = "dpm2"  # DPM-Solver-2M, as QGPO
    vp_steps: int = 20  # 20 field evaluations
    seed: int = 0

    @classmethod
    def quick(cls, **overrides: Any) -> "ToyConfig":
        """A small configuration: short training and few evaluation samples."""
        base: dict[str, Any] = {"n_data": 5_000, "steps": 300, "n_eval": 500, "n_nll": 100}
        base.update(overrides)
        return cls(**base)

    def __post_init__(self):
        for name in ("n_data", "steps", "batch_size", "n_eval", "n_nll", "cep_group"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.batch_size % self.cep_group:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of cep_group {self.cep_group}."
            )
        if not self.beta_max > 0:
            raise ValueError(f"beta_max must be > 0, got {self.beta_max}.")


class ToyModel(eqx.Module):
    """A trained (possibly guided) field with what is needed to sample it and score it."""

    field: Any
    path: AbstractPath
    prediction: str = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    steps: int = eqx.field(static=True)


class _FixedCond(eqx.Module):
    """A field with its condition bound (so the sampler and the likelihood need none)."""

    field: Any
    cond: Array

    def __call__(self, x: Array, t: ArrayLike, cond: Array | None = None) -> Array:
        return self.field(x, t, self.cond)


# --------------------------------------------------------------------------- training


def _loss_ot(model, batch, key):
    return efm_loss(model, _OT, batch["x"], batch["energy"], batch["beta"][0], key)


def _loss_vp(model, batch, key):
    return ed_loss(model, _VP, batch["x"], batch["energy"], batch["beta"][0], key)


def _loss_efm_beta(model, batch, key):
    kb, kt = jr.split(key)
    b = jr.uniform(kb, (), maxval=batch["beta"][0])  # Algorithm 6: one beta per batch
    return efm_loss(eqx.Partial(model, beta=b), _OT, batch["x"], batch["energy"], b, kt)


def _cep_loss_fn(group: int) -> Callable:
    def loss(net, batch, key):
        x, e = batch["x"], batch["energy"]
        g = x.shape[0] // group
        return cep_loss(
            net, _VP, x.reshape(g, group, -1), e.reshape(g, group), batch["beta"][0], key
        )

    return loss


def _cfg_loss_fn(dropout: float) -> Callable:
    def loss(model, batch, key):
        kc, kd, kt = jr.split(key, 3)
        x, e = batch["x"], batch["energy"]
        c = jr.bernoulli(kc, jnp.exp(-(e - batch["emin"]))).astype(x.dtype)
        keep = 1.0 - jr.bernoulli(kd, dropout, c.shape).astype(x.dtype)
        cond = jnp.stack([c, 1.0 - c], axis=-1) * keep[:, None]  # null condition = zeros
        return cfm_loss(model, _OT, x, kt, cond=cond)

    return loss


KINDS: tuple[str, ...] = ("ot", "vp", "cep", "cfg", "efm-beta")


def _chunk(steps: int) -> tuple[int, int]:
    """Split ``steps`` into ``n`` compiled epochs of ``size`` steps (for progress updates)."""
    n = max(1, math.ceil(steps / 250))
    return n, math.ceil(steps / n)


@functools.cache
def _epoch_fn(kind: str, cfg: ToyConfig) -> tuple[Callable, optax.GradientTransformation]:
    n, size = _chunk(cfg.steps)
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, n * size, alpha=0.1)
    opt = optax.adam(schedule)
    loss = {
        "ot": _loss_ot,
        "vp": _loss_vp,
        "efm-beta": _loss_efm_beta,
        "cep": _cep_loss_fn(cfg.cep_group),
        "cfg": _cfg_loss_fn(cfg.cfg_dropout),
    }[kind]
    ema = min(0.999, 1.0 - 10.0 / (n * size))
    return make_epoch(loss, opt, batch_size=cfg.batch_size, steps=size, ema_decay=ema), opt


def _init_net(kind: str, cfg: ToyConfig, key: PRNGKeyArray) -> Any:
    w, d = cfg.width, cfg.depth
    if kind == "cep":
        return EnergyNet(2, width=w, depth=d, key=key)
    if kind == "cfg":
        return MLPField(2, cond_dim=2, width=w, depth=d, key=key)
    if kind == "efm-beta":
        scale = 1.0 / cfg.beta_max  # beta in [0, beta_max] -> embedding phases of order one
        return MLPField(2, beta_input=True, beta_scale=scale, width=w, depth=d, key=key)
    return MLPField(2, width=w, depth=d, key=key)


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
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    epoch, opt = _epoch_fn(kind, cfg)
    kinit, ktrain = jr.split(key)
    state = init_state(_init_net(kind, cfg, kinit), opt)
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


def build_model(
    method: str,
    beta: float,
    cfg: ToyConfig,
    get: Callable[[str, float], Any],
) -> ToyModel:
    """Assemble the sampler of ``method`` at ``beta`` from trained networks.

    ``get(kind, beta)`` returns a trained network (see `train_network`); a sweep caches it so
    that networks that do not depend on ``beta`` (fm, cfg, efm-beta, the QGPO behaviour
    model) are trained once.
    """
    check_method(method)
    b = jnp.asarray(beta, dtype=float)
    if method in ("fm", "efm"):
        net = get("ot", 0.0 if method == "fm" else beta)
        return ToyModel(net, _OT, "velocity", cfg.ot_solver, cfg.ot_steps)
    if method == "efm-beta":
        net = get("efm-beta", max(cfg.beta_max, beta))
        return ToyModel(eqx.Partial(net, beta=b), _OT, "velocity", cfg.ot_solver, cfg.ot_steps)
    if method == "cfg":
        net = get("cfg", 0.0)
        field = _FixedCond(CFGField(net, b, jnp.zeros(2)), jnp.array([1.0, 0.0]))
        return ToyModel(field, _OT, "velocity", cfg.ot_solver, cfg.ot_steps)
    if method == "ed":
        return ToyModel(get("vp", beta), _VP, "eps", cfg.vp_solver, cfg.vp_steps)
    behaviour, energy_net = get("vp", 0.0), get("cep", beta)
    field = EnergyGuidedField(behaviour, energy_net, _VP, jnp.asarray(1.0), "eps")
    return ToyModel(field, _VP, "eps", cfg.vp_solver, cfg.vp_steps)


# --------------------------------------------------------------------------- sampling


@eqx.filter_jit
def _draw(model: ToyModel, key: PRNGKeyArray, n: int) -> Array:
    return sample(
        model.field,
        model.path,
        key,
        (n, 2),
        solver=model.solver,  # pyright: ignore[reportArgumentType]
        steps=model.steps,
        prediction=model.prediction,  # pyright: ignore[reportArgumentType]
    ).x


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
        model.path,
        x,
        prediction=model.prediction,  # pyright: ignore[reportArgumentType]
        rtol=1e-4,
        atol=1e-4,
    )


def model_log_likelihood(model: ToyModel, x: Float[Array, "n 2"]) -> Float[Array, " n"]:
    """Exact log-density of ``x`` under a toy model (`ewfm.log_likelihood`, rtol 1e-4)."""
    return _log_lik(model, x)


def nets_used(method: str) -> tuple[str, ...]:
    """The kinds of networks ``method`` trains (for cost accounting)."""
    return {
        "fm": ("ot",),
        "efm": ("ot",),
        "efm-beta": ("efm-beta",),
        "cfg": ("cfg",),
        "ed": ("vp",),
        "qgpo": ("vp", "cep"),
    }[check_method(method)]
