"""Traversals with known answers for CTD, rendered by the procedural
Shapes3D-like scene with no model (our protocol).

Five continuous factors, each scaled to [0, 1]: floor, wall and object hue,
object scale (0.75..1.25) and camera orientation (-30..30 degrees); the shape
is fixed per source. A direction v moves a source c0 to c0 + t v for t in
[-extent, extent]. Used by tests and `benchmarks/metrics_benchmark.py`.
"""

import numpy as np
import scipy.linalg

from cldis_jax.data import shapes3d

FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "orientation")


def render(coords: np.ndarray, shapes: np.ndarray, resolution: int) -> np.ndarray:
  """[n, 5] coordinates in factor units, [n] shape indices -> [n, H, W, 3] in [0, 1]."""
  c = np.asarray(coords, np.float64)
  layers = shapes3d.layers_at(0.75 + 0.5 * c[:, 3], shapes, -30.0 + 60.0 * c[:, 4], resolution)
  return shapes3d.compose_hues(layers, c[:, :3] % 1.0)


def traversals(directions: np.ndarray, *, num_sources: int = 8, steps: int = 6,
               extent: float = 0.25, resolution: int = 32, seed: int = 0,
               brightness_leak: float = 0.0, noise: float = 0.0) -> np.ndarray:
  """directions [K, 5] -> frames [N, K, 2 steps + 1, H, W, 3] in [0, 1].

  `brightness_leak`: every frame also brightens by leak * t (a global change
  that no factor explains); `noise`: iid Gaussian pixel noise of that std."""
  rng = np.random.RandomState(seed)
  sources = rng.uniform(0.3, 0.7, (num_sources, len(FACTORS)))
  shapes = rng.randint(len(shapes3d.SHAPES), size=num_sources)
  t = np.linspace(-extent, extent, 2 * steps + 1)
  directions = np.asarray(directions, np.float64)
  coords = sources[:, None, None, :] + t[None, None, :, None] * directions[None, :, None, :]
  n, k, f = coords.shape[:3]
  frames = render(coords.reshape(-1, len(FACTORS)), np.repeat(shapes, k * f), resolution)
  frames = frames.reshape((n, k, f) + frames.shape[1:])
  frames = frames + brightness_leak * t[None, None, :, None, None, None]
  if noise:
    frames = frames + noise * rng.randn(*frames.shape)
  return np.clip(frames, 0.0, 1.0).astype(np.float32)


def null_pairs(num: int = 8, resolution: int = 32, noise: float = 0.0, seed: int = 1):
  """Pairs of frames of the same factors with independent noise (null steps)."""
  rng = np.random.RandomState(seed)
  coords = rng.uniform(0.3, 0.7, (num, len(FACTORS)))
  clean = render(coords, rng.randint(len(shapes3d.SHAPES), size=num), resolution)
  noisy = lambda: np.clip(clean + noise * rng.randn(*clean.shape), 0, 1).astype(np.float32)
  return noisy(), noisy()


def rotation(theta: float, dim: int = len(FACTORS), seed: int = 0) -> np.ndarray:
  """expm(theta S) for a fixed random skew-symmetric S with spectral norm 1."""
  a = np.random.RandomState(seed).randn(dim, dim)
  s = a - a.T
  s /= np.linalg.norm(s, 2)
  return scipy.linalg.expm(theta * s)
