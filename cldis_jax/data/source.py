"""The data-source interface shared by every dataset, like `tfds.data_source`.

A source is random access: `len(source)`, `source[i]` -> dict with `image`
(uint8, H x W x C) and, where known, `factors` (int vector) and `region` (an
H x W uint8 map of indices into `source.region_names`), and
`source.__getitems__(indices)` -> the same dict with a leading batch axis.
Sources with ground truth carry a `FactorSpace` and answer `index_of(factors)`
/ `factors_of(index)`, so a metric can sample with one factor held fixed.
"""

import collections
import dataclasses
import threading
from typing import Sequence

import numpy as np
from PIL import Image

from cldis_jax import errors


class DatasetNotFoundError(errors.UserError, FileNotFoundError):
  """The data a config asks for is not where it says; the message says how to get it."""


class UnsupportedFormatError(errors.UserError, ValueError):
  """A source cannot give the requested resolution or channel count."""


@dataclasses.dataclass(frozen=True)
class FactorSpace:
  """Named discrete factors; index <-> factors is row-major (last factor fastest),
  the order of the published Shapes3D / dSprites / MPI3D arrays."""
  names: tuple[str, ...]
  sizes: tuple[int, ...]

  def __len__(self) -> int:
    return int(np.prod(self.sizes))

  def index_of(self, factors) -> np.ndarray:
    """[..., num_factors] ints -> [...] row-major indices (checked against the sizes)."""
    factors = np.asarray(factors)
    if factors.shape[-1:] != (len(self.sizes),):
      raise ValueError(f"factors must end in an axis of {len(self.sizes)} "
                       f"({', '.join(self.names)}), got shape {factors.shape}")
    bad = (factors < 0) | (factors >= np.asarray(self.sizes))
    if bad.any():
      where = np.argwhere(bad)[0]
      raise ValueError(f"factor {self.names[where[-1]]!r} = {factors[tuple(where)]} "
                       f"is outside 0..{self.sizes[where[-1]] - 1}")
    return np.ravel_multi_index(tuple(np.moveaxis(factors, -1, 0)), self.sizes)

  def factors_of(self, index) -> np.ndarray:
    """[...] indices -> [..., num_factors] ints."""
    index = np.asarray(index)
    if ((index < 0) | (index >= len(self))).any():
      raise IndexError(f"index out of range 0..{len(self) - 1}: {index}")
    return np.stack(np.unravel_index(index, self.sizes), axis=-1).astype(np.int64)


class Source:
  """Base class: subclasses set `name`, `image_shape` and implement `__len__` and
  `__getitem__`; ground-truth sources also set `factor_space`."""
  name: str = "source"
  image_shape: tuple[int, int, int]
  factor_space: FactorSpace | None = None
  region_names: tuple[str, ...] | None = None  # what `region` maps hold, if they exist

  def __len__(self) -> int:
    raise NotImplementedError

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def __getitems__(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
    examples = [self[int(i)] for i in indices]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}

  def index_of(self, factors) -> np.ndarray:
    """Record index of each factor combination (row-major unless a subclass says)."""
    return self._require_factors().index_of(factors)

  def factors_of(self, index) -> np.ndarray:
    return self._require_factors().factors_of(index)

  @property
  def factor_names(self) -> tuple[str, ...]:
    return self._require_factors().names

  @property
  def factor_sizes(self) -> tuple[int, ...]:
    return self._require_factors().sizes

  def _require_factors(self) -> FactorSpace:
    if self.factor_space is None:
      raise TypeError(f"{self.name} has no ground-truth factors")
    return self.factor_space

  def _check_index(self, index: int) -> int:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"{self.name}: index {index} out of range 0..{len(self) - 1}")
    return index

  def __repr__(self):
    return f"<{type(self).__name__} {self.name} n={len(self)} image={self.image_shape}>"


def check_resolution(name: str, size: int, native: int, hint: str = "") -> None:
  """Sources with a fixed native resolution can be shrunk, not enlarged."""
  if not 1 <= size <= native:
    raise UnsupportedFormatError(
        f"{name} images are {native}x{native}; image_size {size} is not available "
        f"(valid: 1..{native}, downsampled with area averaging).{hint}")


def check_channels(name: str, requested: int, valid: Sequence[int]) -> None:
  if requested not in valid:
    raise UnsupportedFormatError(
        f"{name} gives {' or '.join(map(str, valid))} channel(s); in_channels "
        f"{requested} is not available")


def _pil_resize(image: np.ndarray, height: int, width: int, resample) -> np.ndarray:
  """uint8 H x W x C -> height x width x C through PIL (which anti-aliases)."""
  if image.shape[:2] == (height, width):
    return image
  squeeze = image.shape[-1] == 1
  out = np.asarray(Image.fromarray(image[..., 0] if squeeze else image).resize(
      (width, height), resample))
  return out[..., None] if squeeze else out


def resize(image: np.ndarray, size: int, resample=Image.Resampling.BOX) -> np.ndarray:
  """uint8 H x W x C -> size x size x C (area averaging by default)."""
  return _pil_resize(image, size, size, resample)


def resize_and_crop(image: np.ndarray, size: int, short_side: int | None = None,
                    resample=Image.Resampling.BILINEAR) -> np.ndarray:
  """torchvision's Resize(short_side) then CenterCrop(size): the short side is
  scaled to `short_side` (default `size`) keeping the aspect ratio, and the
  centre size x size is kept (offsets round((H - size) / 2))."""
  short_side = short_side or size
  height, width = image.shape[:2]
  if height <= width:
    height, width = short_side, int(short_side * width / height)
  else:
    height, width = int(short_side * height / width), short_side
  image = _pil_resize(image, height, width, resample)
  top = int(round((height - size) / 2.0))
  left = int(round((width - size) / 2.0))
  return image[top:top + size, left:left + size]


class ImageCache:
  """A thread-safe LRU cache of arrays (rendered images, layers), bounded in bytes."""

  def __init__(self, max_bytes: int):
    self.max_bytes = int(max_bytes)
    self._items: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
    self._bytes = 0
    self._lock = threading.Lock()

  def get(self, key: int):
    with self._lock:
      value = self._items.get(key)
      if value is not None:
        self._items.move_to_end(key)
      return value

  def put(self, key: int, value: np.ndarray) -> None:
    if value.nbytes > self.max_bytes:
      return
    with self._lock:
      if key in self._items:
        return
      self._items[key] = value
      self._bytes += value.nbytes
      while self._bytes > self.max_bytes:
        _, old = self._items.popitem(last=False)
        self._bytes -= old.nbytes

  def __len__(self):
    return len(self._items)


class RenderedSource(Source):
  """A procedural ground-truth source: images rendered from the factors of the
  index at any resolution (each subclass keeps the cache that suits its renderer)."""

  def __init__(self, name: str, factor_space: FactorSpace, resolution: int,
               channels: int, supersample: int):
    if resolution < 8:
      raise errors.ConfigError(f"{name} renders at 8 pixels or more, not {resolution}")
    self.name, self.factor_space = name, factor_space
    self.resolution, self.supersample = resolution, supersample
    self.image_shape = (resolution, resolution, channels)

  def render(self, factors: np.ndarray) -> np.ndarray:
    """[B, num_factors] ints -> [B, H, W, C] uint8."""
    raise NotImplementedError

  def __len__(self):
    return len(self.factor_space)

  def __getitem__(self, index):
    batch = self.__getitems__([self._check_index(index)])
    return {k: v[0] for k, v in batch.items()}

  def __getitems__(self, indices):
    factors = self.factor_space.factors_of(np.asarray(indices, np.int64).reshape(-1))
    return {"image": self.render(factors), "factors": factors}
