"""A procedural dSprites: one white shape on black, anti-aliased, rendered from
the five dSprites factors at any resolution.

Factors and cardinalities are dSprites' (Matthey et al., 2017), in its order:
shape 3 (square, ellipse, heart), scale 6 (0.5..1), orientation 40, x 32, y 32;
737,280 combinations, index = row-major (the published color factor has one
value and is left out). Orientations are 40 steps of 9 degrees over [0, 2 pi):
the published set includes both 0 and 2 pi, two identical images, which we do
not repeat. As in dSprites, a square looks the same after 90 degrees and an
ellipse after 180 degrees; the heart has no symmetry.

Each pixel is the covered fraction of `supersample**2` sub-pixel samples of
the shape's exact outline.
"""

import numpy as np

from cldis_jax.data.source import FactorSpace, ImageCache, RenderedSource

FACTORS = FactorSpace(names=("shape", "scale", "orientation", "x", "y"),
                      sizes=(3, 6, 40, 32, 32))
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.arange(40) * (2 * np.pi / 40)
POSITIONS = np.linspace(0.2, 0.8, 32)  # sprite centre, as a fraction of the width
_HALF_SIZE = 0.13  # half side of the square at scale 1, as a fraction of the width
_REACH = 0.2  # no shape reaches further than this from its centre (any angle)


def _inside(shape: str, u, v):
  """Whether points (u, v), in the sprite's own frame and units of its half
  size, lie inside the shape (v points down the image)."""
  if shape == "square":
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
  if shape == "ellipse":
    return u**2 + (v / 0.5)**2 <= 1.2
  x, y = u / 1.05, -v / 1.05 + 0.1  # the classic heart curve, point down
  return (x**2 + y**2 - 1.0)**3 - x**2 * y**3 <= 0.0


def render(factors: np.ndarray, resolution: int, supersample: int = 4) -> np.ndarray:
  """[B, 5] factor indices -> [B, resolution, resolution, 1] uint8 images."""
  factors = np.asarray(factors).reshape(-1, 5)
  half = (_HALF_SIZE * SCALES[factors[:, 1]])[:, None, None]
  angle = ORIENTATIONS[factors[:, 2]][:, None, None]
  cx, cy = POSITIONS[factors[:, 3]], POSITIONS[factors[:, 4]]

  # Only a window around each sprite is sampled; it is then pasted on the canvas.
  reach = int(np.ceil(_REACH * resolution)) + 1
  window = 2 * reach + 1
  offsets = (np.arange(window)[:, None]
             + (np.arange(supersample)[None, :] + 0.5) / supersample).reshape(-1)
  x0 = np.floor(cx * resolution).astype(int) - reach
  y0 = np.floor(cy * resolution).astype(int) - reach
  dx = ((x0[:, None] + offsets) / resolution - cx[:, None])[:, None, :]
  dy = ((y0[:, None] + offsets) / resolution - cy[:, None])[:, :, None]
  cos, sin = np.cos(angle), np.sin(angle)
  u = ((cos * dx + sin * dy) / half).astype(np.float32)
  v = ((-sin * dx + cos * dy) / half).astype(np.float32)
  inside = np.zeros(u.shape, bool)
  for k, name in enumerate(SHAPES):
    rows = factors[:, 0] == k
    if rows.any():
      inside[rows] = _inside(name, u[rows], v[rows])
  coverage = inside.reshape(
      len(factors), window, supersample, window, supersample).mean(axis=(2, 4))

  canvas = np.zeros((len(factors), resolution + 2 * window, resolution + 2 * window))
  for b in range(len(factors)):
    top, left = y0[b] + window, x0[b] + window
    canvas[b, top:top + window, left:left + window] = coverage[b]
  image = canvas[:, window:window + resolution, window:window + resolution]
  return np.round(image * 255.0).astype(np.uint8)[..., None]


class ProceduralDSprites(RenderedSource):
  """dSprites-like ground-truth source rendered on demand (no download), with an
  LRU cache of rendered images bounded by `cache_mb`."""

  def __init__(self, resolution: int = 64, cache_mb: float = 512, supersample: int = 4):
    super().__init__("procedural/dsprites", FACTORS, resolution, 1, supersample)
    self.cache = ImageCache(int(cache_mb * 2**20))

  def render(self, factors):
    keys = self.factor_space.index_of(factors)
    images = [self.cache.get(int(k)) for k in keys]
    missing = [row for row, image in enumerate(images) if image is None]
    if missing:
      for row, image in zip(missing, render(factors[missing], self.resolution,
                                            self.supersample)):
        images[row] = image
        self.cache.put(int(keys[row]), image)
    return np.stack(images)
