"""A procedural Shapes3D: a ray-traced room with a floor, a back wall and one
object, rendered from the six Shapes3D factors at any resolution.

Factors and cardinalities are DeepMind Shapes3D's (Burgess & Kim, 2018), in its
order: floor hue 10, wall hue 10, object hue 10, scale 8, shape 4, orientation
15; 480,000 combinations, index = row-major over the factors. The values follow
the published ones: hues in [0, 1) in steps of 0.1, scale 0.75..1.25,
orientation -30..30 degrees. Shapes are cube, cylinder, sphere and a capsule
lying on its side.

The scene is deterministic and has the structure a model must learn: Lambert
shading with a specular highlight on the object, cast shadows on floor and
wall, a horizon where floor meets wall that tilts as the camera orbits the
object (the orientation factor), darkening into the corner and with distance.
Each pixel averages `supersample**2` rays.
"""

import numpy as np

from cldis_jax.data.source import FactorSpace, ImageCache, RenderedSource

FACTORS = FactorSpace(
    names=("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
    sizes=(10, 10, 10, 8, 4, 15))
SHAPES = ("cube", "cylinder", "sphere", "capsule")
HUES = np.arange(10) / 10.0
SCALES = np.linspace(0.75, 1.25, 8)
ORIENTATIONS_DEG = np.linspace(-30.0, 30.0, 15)
_GEOMETRY_SIZES = FACTORS.sizes[3:]  # (scale, shape, orientation)
# The image's regions, in the order of their hue factors; `regions_of` maps
# each pixel to the one that covers most of it.
REGIONS = ("floor", "wall", "object")
_SHADING = 4  # layers 0-3: shaded floor, wall, object and the highlight; 4-6: coverage

_WALL_Z = 2.2  # back wall: the plane z = _WALL_Z; the floor is y = 0
_CAMERA_RADIUS, _CAMERA_HEIGHT, _LOOK_AT_HEIGHT = 3.3, 1.5, 0.45
_FOV_TAN = np.tan(np.deg2rad(22.0))  # half the vertical field of view
_LIGHT = np.array([-0.55, 1.0, -0.65]) / np.linalg.norm([-0.55, 1.0, -0.65])
_AMBIENT = 0.35
_EPS = 1e-4


def hsv_to_rgb(h, s, v):
  """Vectorised HSV -> RGB, all in [0, 1]; returns [..., 3]."""
  h = np.asarray(h, np.float64)
  i = np.floor(h * 6.0) % 6
  f = h * 6.0 - np.floor(h * 6.0)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  v = np.broadcast_to(v, h.shape)
  choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
  out = np.zeros(h.shape + (3,))
  for k, rgb in enumerate(choices):
    mask = i == k
    for c in range(3):
      out[..., c] = np.where(mask, np.broadcast_to(rgb[c], h.shape), out[..., c])
  return out


def _dot(a, b):
  return np.sum(a * b, axis=-1)


def _sphere(o, d, center, radius):
  """First hit t (inf on a miss) of rays o + t d with spheres. Shapes broadcast."""
  oc = o - center
  b = _dot(oc, d)
  h = b * b - (_dot(oc, oc) - radius**2)
  t = -b - np.sqrt(np.maximum(h, 0.0))
  return np.where((h >= 0) & (t > _EPS), t, np.inf)


def _box(o, d, half):
  """Axis-aligned box [-half, half] x [0, 2 half] x [-half, half]."""
  lo = np.stack([-half, np.zeros_like(half), -half], -1)
  hi = np.stack([half, 2 * half, half], -1)
  inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
  t1, t2 = (lo - o) * inv, (hi - o) * inv
  tmin = np.max(np.minimum(t1, t2), axis=-1)
  tmax = np.min(np.maximum(t1, t2), axis=-1)
  return np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf)


def _vertical_cylinder(o, d, radius, height):
  """Closed-top cylinder around the y axis standing on the floor."""
  a = d[..., 0]**2 + d[..., 2]**2
  b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
  c = o[..., 0]**2 + o[..., 2]**2 - radius**2
  h = b * b - a * c
  t = (-b - np.sqrt(np.maximum(h, 0.0))) / np.maximum(a, 1e-12)
  y = o[..., 1] + t * d[..., 1]
  side = np.where((h >= 0) & (t > _EPS) & (y >= 0) & (y <= height), t, np.inf)
  t_cap = (height - o[..., 1]) / np.where(np.abs(d[..., 1]) < 1e-12, 1e-12, d[..., 1])
  p = o + t_cap[..., None] * d
  on_cap = (p[..., 0]**2 + p[..., 2]**2 <= radius**2) & (t_cap > _EPS)
  return np.minimum(side, np.where(on_cap, t_cap, np.inf))


def _lying_capsule(o, d, radius, half_length):
  """Capsule along the x axis from -half_length to +half_length, resting on the floor."""
  a = d[..., 1]**2 + d[..., 2]**2
  oy = o[..., 1] - radius
  b = oy * d[..., 1] + o[..., 2] * d[..., 2]
  c = oy**2 + o[..., 2]**2 - radius**2
  h = b * b - a * c
  t = (-b - np.sqrt(np.maximum(h, 0.0))) / np.maximum(a, 1e-12)
  x = o[..., 0] + t * d[..., 0]
  body = np.where((h >= 0) & (t > _EPS) & (np.abs(x) <= half_length), t, np.inf)
  zero = np.zeros_like(radius)
  ends = [_sphere(o, d, np.stack([side * half_length, radius, zero], -1), radius)
          for side in (-1.0, 1.0)]
  return np.minimum(body, np.minimum(*ends))


def _object_hit(o, d, shape, size):
  """Hit distance of each ray with its image's object. o, d: [B, P, 3]; shape,
  size: [B] (size is the object's half height)."""
  s = size[:, None]
  t = np.full(d.shape[:2], np.inf)
  for k, name in enumerate(SHAPES):
    rows = shape == k
    if not rows.any():
      continue
    ob, db, sb = o[rows], d[rows], s[rows]
    if name == "cube":
      hit = _box(ob, db, 0.85 * sb)
    elif name == "cylinder":
      hit = _vertical_cylinder(ob, db, 0.8 * sb, 1.7 * sb)
    elif name == "sphere":
      center = np.stack([np.zeros_like(sb), sb, np.zeros_like(sb)], -1)
      hit = _sphere(ob, db, center, sb)
    else:
      hit = _lying_capsule(ob, db, 0.6 * sb, 0.75 * sb)
    t[rows] = hit
  return t


def _object_normal(p, shape, size):
  """Outward normals at surface points p: [B, P, 3]."""
  s = size[:, None, None]
  n = np.zeros_like(p)
  for k, name in enumerate(SHAPES):
    rows = shape == k
    if not rows.any():
      continue
    q, sb = p[rows], s[rows]
    if name == "cube":  # the face whose coordinate is closest to its bound
      centered = q - np.concatenate([np.zeros_like(sb), 0.85 * sb, np.zeros_like(sb)], -1)
      axis = np.argmax(np.abs(centered), axis=-1)
      nb = np.zeros_like(q)
      np.put_along_axis(nb, axis[..., None],
                        np.sign(np.take_along_axis(centered, axis[..., None], -1)), -1)
    elif name == "cylinder":
      top = q[..., 1:2] >= 1.7 * sb - 1e-3
      side = q * np.array([1.0, 0.0, 1.0])
      nb = np.where(top, np.array([0.0, 1.0, 0.0]), side)
    elif name == "sphere":
      nb = q - np.concatenate([np.zeros_like(sb), sb, np.zeros_like(sb)], -1)
    else:
      x = np.clip(q[..., :1], -0.75 * sb, 0.75 * sb)
      nb = q - np.concatenate(np.broadcast_arrays(x, 0.6 * sb, 0.0 * sb), -1)
    n[rows] = nb
  return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


def _camera_rays(orientation_deg, resolution):
  """Ray origins [B, 1, 3] and unit directions [B, P, 3] of a camera orbiting
  the object by the orientation angle (pixel rows top to bottom)."""
  theta = np.deg2rad(orientation_deg)
  origin = np.stack([_CAMERA_RADIUS * np.sin(theta),
                     np.full_like(theta, _CAMERA_HEIGHT),
                     -_CAMERA_RADIUS * np.cos(theta)], -1)
  forward = np.array([0.0, _LOOK_AT_HEIGHT, 0.0]) - origin
  forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
  right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
  right /= np.linalg.norm(right, axis=-1, keepdims=True)
  up = np.cross(right, forward)
  grid = ((np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0) * _FOV_TAN
  v, u = np.meshgrid(-grid, grid, indexing="ij")
  d = (forward[:, None, None] + u[None, ..., None] * right[:, None, None]
       + v[None, ..., None] * up[:, None, None]).reshape(len(theta), -1, 3)
  return origin[:, None, :], d / np.linalg.norm(d, axis=-1, keepdims=True)


def render_layers(geometry: np.ndarray, resolution: int, supersample: int = 2) -> np.ndarray:
  """The hue-independent part of the image: [N, 3] (scale, shape, orientation)
  indices -> [N, 7, H, W] float32 maps: the shaded coverage of floor, wall and
  object, the object's specular highlight, and the plain coverage (the share
  of each pixel's rays) of floor, wall and object. An image is a fixed linear
  combination of the first four with its three colours (`compose`); the last
  three give its regions (`regions_of`)."""
  geometry = np.asarray(geometry).reshape(-1, 3)
  return layers_at(SCALES[geometry[:, 0]], geometry[:, 1], ORIENTATIONS_DEG[geometry[:, 2]],
                   resolution, supersample)


def layers_at(scale, shape, orientation_deg, resolution: int,
              supersample: int = 2) -> np.ndarray:
  """`render_layers` at real-valued scales and orientations (degrees), [N] each;
  `shape` is an index into SHAPES. Used to render continuous traversals."""
  size, shape = 0.5 * np.asarray(scale, np.float64), np.asarray(shape)
  n_img, res = len(size), resolution * supersample
  o, d = _camera_rays(np.asarray(orientation_deg, np.float64), res)

  t_floor = np.where(d[..., 1] < -1e-9, -o[..., 1] / np.minimum(d[..., 1], -1e-9), np.inf)
  t_wall = np.where(d[..., 2] > 1e-9, (_WALL_Z - o[..., 2]) / np.maximum(d[..., 2], 1e-9),
                    np.inf)
  t_obj = _object_hit(o, d, shape, size)
  t = np.minimum(np.minimum(t_floor, t_wall), t_obj)
  p = o + t[..., None] * d
  is_obj = t_obj <= np.minimum(t_floor, t_wall)
  is_floor = ~is_obj & (t_floor <= t_wall)
  is_wall = ~is_obj & ~is_floor

  normal = np.where(is_floor[..., None], np.array([0.0, 1.0, 0.0]),
                    np.array([0.0, 0.0, -1.0]))
  normal = np.where(is_obj[..., None], _object_normal(p, shape, size), normal)
  diffuse = np.maximum(_dot(normal, _LIGHT), 0.0)

  # Cast shadows: does the object block the light from this floor / wall point?
  blocked = np.isfinite(_object_hit(p + 1e-3 * normal, np.broadcast_to(_LIGHT, d.shape),
                                    shape, size))
  lit = np.where(~is_obj & blocked, 0.0, 1.0)

  # The room darkens into the floor/wall corner and with distance from the camera.
  corner = np.where(is_floor, _WALL_Z - p[..., 2], p[..., 1])
  occlusion = np.where(is_obj, 1.0, 1.0 - 0.35 * np.exp(-np.maximum(corner, 0.0) / 0.3))
  falloff = 1.0 - 0.25 * np.clip(t / 9.0, 0.0, 1.0)
  half_vector = _LIGHT - d
  half_vector /= np.linalg.norm(half_vector, axis=-1, keepdims=True)
  specular = np.where(is_obj, 0.35 * np.maximum(_dot(normal, half_vector), 0.0)**24, 0.0)

  shade = (_AMBIENT + (1 - _AMBIENT) * diffuse * lit) * occlusion * falloff
  layers = np.stack([shade * is_floor, shade * is_wall, shade * is_obj, specular,
                     is_floor, is_wall, is_obj], 1)
  layers = layers.reshape(n_img, -1, resolution, supersample, resolution, supersample)
  return layers.mean(axis=(3, 5)).astype(np.float32)


def regions_of(layers: np.ndarray) -> np.ndarray:
  """[N, 7, H, W] layers -> [N, H, W] uint8 region map: each pixel's index in
  REGIONS (floor 0, wall 1, object 2), the region most of its rays hit."""
  return np.argmax(layers[:, _SHADING:], axis=1).astype(np.uint8)


def compose(layers: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """[N, 7, H, W] layers and [N, 6] factors -> [N, H, W, 3] uint8 images."""
  factors = np.asarray(factors).reshape(-1, 6)
  image = compose_hues(layers, HUES[factors[:, :3]])
  return np.round(image * 255.0).astype(np.uint8)


def compose_hues(layers: np.ndarray, hues: np.ndarray) -> np.ndarray:
  """[N, 7, H, W] layers and [N, 3] real (floor, wall, object) hues in [0, 1)
  -> [N, H, W, 3] float images in [0, 1]."""
  hues = np.asarray(hues).reshape(-1, 3)
  colors = np.stack([hsv_to_rgb(hues[:, 0], 0.7, 0.9),     # floor
                     hsv_to_rgb(hues[:, 1], 0.6, 0.85),    # wall
                     hsv_to_rgb(hues[:, 2], 0.85, 0.95),   # object
                     np.ones((len(hues), 3))], 1).astype(np.float32)  # highlight
  return np.clip(np.einsum("nkhw,nkc->nhwc", layers[:, :_SHADING], colors), 0.0, 1.0)


def geometry_of(factors: np.ndarray) -> np.ndarray:
  """The factors that shape the layers: (scale, shape, orientation)."""
  return np.asarray(factors).reshape(-1, 6)[:, 3:]


def render(factors: np.ndarray, resolution: int, supersample: int = 2) -> np.ndarray:
  """[B, 6] factor indices -> [B, resolution, resolution, 3] uint8 images."""
  factors = np.asarray(factors).reshape(-1, 6)
  return compose(render_layers(geometry_of(factors), resolution, supersample), factors)


class ProceduralShapes3D(RenderedSource):
  """Shapes3D-like ground-truth source rendered on demand (no download). With
  `regions`, every example also has `region`: its [H, W] uint8 region map
  (indices into REGIONS, `region_names`)."""

  def __init__(self, resolution: int = 64, cache_mb: float = 512, supersample: int = 2,
               regions: bool = False):
    """`cache_mb` bounds the cache of hue-independent layers: all 480 take
    480 * 28 * resolution**2 bytes (55 MB at 64 px, 220 MB at 128 px)."""
    super().__init__("procedural/shapes3d", FACTORS, resolution, 3, supersample)
    self.layer_cache = ImageCache(int(cache_mb * 2**20))
    self.region_names = REGIONS if regions else None

  def render_all_layers(self) -> None:
    """Fills the layer cache (every later image is a cheap composition)."""
    self._layers(range(int(np.prod(_GEOMETRY_SIZES))))

  def render(self, factors):
    return compose(self._layers_of(factors), factors)

  def __getitems__(self, indices):
    out = super().__getitems__(indices)
    if self.region_names:  # the layers are cached by now
      out["region"] = regions_of(self._layers_of(out["factors"]))
    return out

  def _layers_of(self, factors) -> np.ndarray:
    keys = np.ravel_multi_index(geometry_of(factors).T, _GEOMETRY_SIZES)
    layers = self._layers(np.unique(keys))
    return np.stack([layers[int(k)] for k in keys])

  def _layers(self, keys) -> dict[int, np.ndarray]:
    """Layers of the given geometry keys, rendering (and caching) the missing ones."""
    layers = {int(k): self.layer_cache.get(int(k)) for k in keys}
    missing = [k for k, value in layers.items() if value is None]
    if missing:
      fresh = render_layers(np.stack(np.unravel_index(missing, _GEOMETRY_SIZES), -1),
                            self.resolution, self.supersample)
      for key, value in zip(missing, fresh):
        layers[key] = value
        self.layer_cache.put(key, value)
    return layers
