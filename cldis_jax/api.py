"""A trained workdir as a Python object, for notebooks and scripts.

  from cldis_jax import api
  model = api.load("/tmp/cldis_quickstart")       # latest checkpoint, EMA weights
  x = model.images(["face.png"])                  # or model.images(count=4) from the data
  z = model.encode(x)                             # z_sem (N, z_dim)
  x_T = model.invert(x)                           # DDIM inversion (N, H, W, C)
  y = model.decode(z, x_T)                        # images in [-1, 1]
  mu = model.representation(x)                    # mu_s (N, d_v), the evaluated code
  row = model.edit(x, 0, [-3, 0, 3])              # along learned direction 0: (N, 3, H, W, C)
  frames = model.traverse(x, [-3, 0, 3], kind="mu_s")   # every axis: (N, d_v, 3, H, W, C)
  mix = model.interpolate(x[:1], x[1:2], np.linspace(0, 1, 7))
  # with labelled factors (model.labels):
  cols = model.set_factor(x, "floor_hue", range(10))  # each value: (N, 10, H, W, C)
  mid = model.blend_factor(x, "floor_hue", 2, 7, np.linspace(0, 1, 5))
  # with subspaces (config.subspaces):
  moved = model.swap(x, donors, "floor")  # x's floor block from each donor: (N, M, H, W, C)
  # with a latent DDIM (--mode=train_latent):
  new = model.sample(16, seed=0)               # unconditional samples (16, H, W, C)
  moved = model.sample_traversals(4, [-2, 0, 2], kind="mu_s")  # (4, d_v, 3, H, W, C)

Every method takes images as uint8 (0..255) or float in [-1, 1] (within
`FLOAT_TOLERANCE`), shaped (N, H, W, C) or (H, W, C) at the model's size,
returns numpy arrays (images in [-1, 1]; `to_uint8` converts), and runs a
jitted function on whatever device JAX has. Anything else (floats in 0..255,
other integer types, NaN, an empty batch, a wrong shape, a string where
arrays or a list of paths belong) is a ValueError naming what was expected.

Edit strengths are in standard deviations of the data along the direction:
for a learned direction, the std of z_sem projected on it; for axis j of
mu_s ("mu_s"), the std of mu_s[j], moved through the head's pseudo-inverse.
Inversion and decoding use `config.edit.invert_steps` / `decode_steps` DDIM
steps; samples use `config.sample.latent_steps` / `image_steps`.
"""

from typing import Sequence

from absl import logging
import jax.numpy as jnp
import numpy as np

from cldis_jax import (checkpoint, codes, data, errors, grids, inference, latent,
                       models as models_lib, navigation, subspaces, trained)
from cldis_jax.data.folder import load_image
from cldis_jax.models.labelled import factor_slice

KINDS = ("navigation", "mu_s")  # directions; edit.directions also takes "labels"
FLOAT_TOLERANCE = 1e-3  # float images may stray this far outside [-1, 1]
to_uint8 = grids.to_uint8


class InputError(errors.UserError, ValueError):
  """An argument of a `Trained` method that it cannot take."""


def _finite(name: str, x: np.ndarray) -> np.ndarray:
  if not np.all(np.isfinite(x)):
    raise InputError(f"{name} contains NaN or inf")
  return x


def _array(name: str, x, dtype=None) -> np.ndarray:
  if isinstance(x, (str, bytes)):
    raise InputError(f"{name} is the string {x!r}; expected an array (image files: "
                     "model.images([path, ...]))")
  return np.asarray(x, dtype)


def load_images(paths: Sequence[str], config) -> np.ndarray:
  """Image files of any size -> (N, H, W, C) in [-1, 1] at the config's
  resolution; a missing or unreadable file is an error naming it."""
  if isinstance(paths, (str, bytes)):
    raise InputError(f"paths is the string {paths!r}; expected a list of image files "
                     f"([{paths!r}])")
  if not len(paths):
    raise InputError("paths is empty; expected a list of image files")
  m = config.model
  return data.to_model_range(np.stack([load_image(p, m.image_size, m.in_channels)
                                       for p in paths]))


def load(workdir: str, config=None, step: int | None = None) -> "Trained":
  """The model in `workdir` (latest training checkpoint unless `step`), with
  the config stored next to it unless one is given."""
  return trained.load(workdir, config, step, cls=Trained)


class Trained(trained.Run):
  """A trained run (config, models, EMA parameters, step, workdir), with
  checked inputs and the edits."""

  def __post_init__(self):
    e = self.config.edit
    self.invert_process = self.process(e.invert_steps)
    self.decode_process = self.process(e.decode_steps, e.guidance)
    self.image_shape = (self.config.model.image_size,) * 2 + (self.config.model.in_channels,)
    self._navigation = self._z_cov = self._latent = None

  # --- inputs -----------------------------------------------------------------------

  def images(self, paths: Sequence[str] = (), count: int = 0) -> np.ndarray:
    """Image files (any size: resized, centre-cropped), or `count` images
    spread over the dataset -> (N, H, W, C) in [-1, 1]."""
    if isinstance(paths, (str, bytes)) or len(paths):
      return load_images(paths, self.config)
    if count < 1:
      raise InputError(f"images() needs image files or count >= 1, got count={count}")
    return data.spread_images(self.source, count)

  def _batch(self, x, name: str = "images") -> jnp.ndarray:
    x = _array(name, x)
    given = x.shape
    if x.ndim == 3:
      x = x[None]
    if x.ndim != 4 or x.shape[1:] != self.image_shape:
      raise InputError(f"{name} of shape {given} given; this model takes "
                       f"{self.image_shape} or (N,) + {self.image_shape} (use "
                       "model.images(paths) to resize files)")
    if not len(x):
      raise InputError(f"{name} is an empty batch (shape {x.shape}); give at least one image")
    if x.dtype == np.uint8:
      return jnp.asarray(data.to_model_range(x), jnp.float32)
    if not np.issubdtype(x.dtype, np.floating):
      raise InputError(f"{name} has dtype {x.dtype}; expected uint8 (0..255) or float in "
                       "[-1, 1]")
    _finite(name, x)
    low, high = float(x.min()), float(x.max())
    if low < -1 - FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
      raise InputError(f"{name} are floats in [{low:.3g}, {high:.3g}]; expected [-1, 1] "
                       "(from 0..255: x / 127.5 - 1; or pass uint8)")
    return jnp.asarray(x, jnp.float32)

  def _codes(self, z_sem, n: int | None = None) -> jnp.ndarray:
    z = _finite("z_sem", _array("z_sem", z_sem, np.float32))
    z_dim = self.models.code_dim
    if z.ndim == 1:
      z = z[None]
    if z.ndim != 2 or z.shape[1] != z_dim or not len(z) or (n is not None and len(z) != n):
      want = f"({n if n is not None else 'N'}, {z_dim})"
      raise InputError(f"z_sem of shape {z.shape} given; expected {want}")
    return jnp.asarray(z)

  def _noise(self, x_T) -> jnp.ndarray:
    x = _finite("x_T", _array("x_T", x_T, np.float32))
    if x.ndim == 3:
      x = x[None]
    if x.ndim != 4 or x.shape[1:] != self.image_shape or not len(x):
      raise InputError(f"x_T of shape {x.shape} given; expected (N,) + {self.image_shape}")
    return jnp.asarray(x)

  # --- the autoencoder ----------------------------------------------------------------

  def encode(self, x) -> np.ndarray:
    """z_sem (N, z_dim)."""
    return np.asarray(inference.encode(self.models, self.params, self._batch(x)))

  def representation(self, x) -> np.ndarray:
    """mu_s (N, d_v): the distilled code the metrics evaluate."""
    return np.asarray(codes.encode_batch(self.models, self.params, self._batch(x))["mu_s"])

  def invert(self, x, z_sem=None) -> np.ndarray:
    """x_T (N, H, W, C) by DDIM inversion under z_sem (default: encode(x))."""
    x = self._batch(x)
    z_sem = (inference.encode(self.models, self.params, x) if z_sem is None
             else self._codes(z_sem, len(x)))
    return np.asarray(inference.invert(self.models, self.invert_process, self.params, x, z_sem))

  def decode(self, z_sem, x_T) -> np.ndarray:
    """Images (N, H, W, C) in [-1, 1] from (z_sem, x_T) by DDIM."""
    x_T = self._noise(x_T)
    return np.asarray(inference.decode(self.models, self.decode_process, self.params,
                                       self._codes(z_sem, len(x_T)), x_T))

  def reconstruct(self, x) -> np.ndarray:
    """decode(encode(x), invert(x))."""
    z = self.encode(x)
    return self.decode(z, self.invert(x, z))

  # --- directions ---------------------------------------------------------------------

  def _navigation_state(self):
    if self._navigation is None:
      if self.workdir is None:
        raise FileNotFoundError("this model was not loaded from a workdir, so it has no "
                                "navigation checkpoint")
      self._navigation = navigation.restore(self.workdir)  # (its config, nav, state)
    return self._navigation

  def z_cov(self) -> np.ndarray:
    """Covariance of z_sem over the data: the navigation run's, else measured
    on `navigate.reference_images` images of the dataset."""
    if self._z_cov is None:
      try:
        self._z_cov = np.asarray(self._navigation_state()[2].z_cov, np.float64)
      except (FileNotFoundError, checkpoint.CorruptCheckpointError) as e:
        if isinstance(e, checkpoint.CorruptCheckpointError):  # optional here: measure it
          logging.warning("%s; measuring z_sem's covariance on the data instead", e)
        _, self._z_cov = codes.zsem_moments(
            self.models, self.params, self.source,
            num_images=self.config.navigate.reference_images, seed=self.config.seed)
    return self._z_cov

  def directions(self, kind: str = "navigation") -> tuple[np.ndarray, np.ndarray]:
    """(directions (K, z_dim), sigma (K,)): z_sem + s * sigma[k] * directions[k]
    moves s standard deviations along direction k."""
    if kind == "navigation":
      return navigation.directions_of(*self._navigation_state())
    if kind == "mu_s":
      return (np.asarray(models_lib.mu_directions(self.models, self.params)),
              models_lib.mu_std(self.models, self.params, self.z_cov()))
    raise InputError(f"direction kind {kind!r} is not one of {KINDS}")

  # --- edits --------------------------------------------------------------------------

  def traverse(self, x, strengths, kind: str = "navigation",
               which: Sequence[int] | None = None) -> np.ndarray:
    """Every direction (or those in `which`) at each strength (F,), in std
    units -> (N, K, F, H, W, C); strength 0 is the reconstruction."""
    directions, sigma = self.directions(kind)
    which = self._which(directions, which, kind)
    strengths = self._strengths(strengths)
    x = self._batch(x)
    z = inference.encode(self.models, self.params, x)
    x_T = inference.invert(self.models, self.invert_process, self.params, x, z)
    return np.asarray(inference.decode_along(
        self.models, self.decode_process, self.params, z, x_T,
        jnp.asarray(directions[which]), jnp.asarray(sigma[which, None] * strengths[None, :])))

  @staticmethod
  def _which(directions, which, kind: str) -> np.ndarray:
    which = np.arange(len(directions)) if which is None else np.asarray(which, np.int64)
    bad = [int(k) for k in which if not 0 <= k < len(directions)]
    if bad:
      raise InputError(f"direction indices {bad} out of range: {kind} has "
                       f"{len(directions)} directions (0..{len(directions) - 1})")
    return which

  @staticmethod
  def _strengths(strengths) -> np.ndarray:
    strengths = _finite("strengths", _array("strengths", strengths, np.float32).reshape(-1))
    if not len(strengths):
      raise InputError("strengths is empty; give at least one strength (0: unchanged)")
    return strengths

  def edit(self, x, direction: int, strengths, kind: str = "navigation") -> np.ndarray:
    """One direction at each strength (F,) -> (N, F, H, W, C)."""
    return self.traverse(x, strengths, kind, [direction])[:, 0]

  # --- labelled factors ----------------------------------------------------------------

  @property
  def factors(self) -> tuple[str, ...]:
    """The labelled factors (model.labels.factors); empty for an unsupervised run."""
    return tuple(self.config.model.labels.factors)

  def factor_index(self, factor) -> int:
    """A labelled factor named or numbered -> its index."""
    if not self.factors:
      raise InputError("this run has no labelled factors (model.labels.factors is empty)")
    if factor in self.factors:
      return self.factors.index(factor)
    if isinstance(factor, (int, np.integer)) and 0 <= factor < len(self.factors):
      return int(factor)
    raise InputError(f"factor {factor!r} is not labelled; valid: {', '.join(self.factors)} "
                     f"or 0..{len(self.factors) - 1}")

  def factor_table(self, factor) -> np.ndarray:
    """(values, factor_dim): the code of each value of a labelled factor."""
    return np.asarray(self.params["labels"][f"table_{self.factor_index(factor)}"])

  def set_factor(self, x, factor, values) -> np.ndarray:
    """Each image with the labelled `factor` set to each of `values` (ints),
    everything else kept -> (N, V, H, W, C), decoded from the image's DDIM
    inversion."""
    table = self.factor_table(factor)
    values = np.asarray(list(values))
    if values.ndim != 1 or not len(values) or not np.issubdtype(values.dtype, np.integer) or (
        (values < 0) | (values >= len(table))).any():
      raise InputError(f"values {values.tolist()} of {factor!r}: give integers in "
                       f"0..{len(table) - 1}")
    return self._with_factor_codes(x, self.factor_index(factor), table[values])

  def blend_factor(self, x, factor, a: int, b: int, alphas) -> np.ndarray:
    """The labelled `factor`'s code moved from value a's to value b's
    linearly, at alphas (F,) -> (N, F, H, W, C)."""
    table = self.factor_table(factor)
    if not (0 <= a < len(table) and 0 <= b < len(table)):
      raise InputError(f"values {a}, {b} of {factor!r}: give integers in 0..{len(table) - 1}")
    alphas = _finite("alphas", _array("alphas", alphas, np.float32).reshape(-1))
    codes_ = (1 - alphas)[:, None] * table[a] + alphas[:, None] * table[b]
    return self._with_factor_codes(x, self.factor_index(factor), codes_)

  def _with_factor_codes(self, x, f: int, factor_codes) -> np.ndarray:
    part = factor_slice(self.models.labels, f)
    return self._with_part(self._batch(x), (part.start, part.stop), factor_codes)

  def _with_part(self, x, part: tuple[int, int], part_codes) -> np.ndarray:
    """Checked images x with code dims [start, stop) set to each row of
    part_codes, decoded from x's inversion -> (N, V, H, W, C)."""
    z = inference.encode(self.models, self.params, x)
    x_T = inference.invert(self.models, self.invert_process, self.params, x, z)
    return np.asarray(inference.decode_with_part(
        self.models, self.decode_process, self.params, part, z, x_T,
        jnp.asarray(part_codes, jnp.float32)))

  # --- subspaces -----------------------------------------------------------------------

  @property
  def blocks(self) -> tuple[str, ...]:
    """The named blocks of z_sem (config.subspaces.blocks); empty if none."""
    return tuple(self.config.subspaces.blocks)

  def block_index(self, block) -> int:
    """A block named or numbered -> its index."""
    if block in self.blocks:
      return self.blocks.index(block)
    if isinstance(block, (int, np.integer)) and 0 <= block < len(self.blocks):
      return int(block)
    valid = (f"{', '.join(self.blocks)} or 0..{len(self.blocks) - 1}" if self.blocks else
             "none: this run has no subspaces (config.subspaces.blocks is empty)")
    raise InputError(f"block {block!r} does not exist; valid: {valid}")

  def swap(self, a, b, block) -> np.ndarray:
    """Each image of `a` with `block` of its code taken from each image of
    `b`, everything else kept -> (N_a, N_b, H, W, C), decoded from a's DDIM
    inversion (where b is a itself, the reconstruction)."""
    start, stop = subspaces.block_bounds(self.config.subspaces.sizes)[self.block_index(block)]
    a, b = self._batch(a, "a"), self._batch(b, "b")
    z_b = inference.encode(self.models, self.params, b)
    return self._with_part(a, (int(start), int(stop)), z_b[:, start:stop])

  def interpolate(self, x_a, x_b, alphas) -> np.ndarray:
    """Image pairs -> (N, F, H, W, C) at alphas (F,) in [0, 1]: z_sem linear,
    x_T spherical (alpha 0 and 1 are the two reconstructions)."""
    x_a, x_b = self._batch(x_a, "x_a"), self._batch(x_b, "x_b")
    if len(x_a) != len(x_b):
      raise InputError(f"x_a has {len(x_a)} images and x_b {len(x_b)}; give pairs")
    alphas = _finite("alphas", _array("alphas", alphas, np.float32).reshape(-1))
    z_a, z_b = (inference.encode(self.models, self.params, x) for x in (x_a, x_b))
    t_a = inference.invert(self.models, self.invert_process, self.params, x_a, z_a)
    t_b = inference.invert(self.models, self.invert_process, self.params, x_b, z_b)
    return np.asarray(inference.interpolate(self.models, self.decode_process, self.params,
                                            z_a, z_b, t_a, t_b, jnp.asarray(alphas)))

  # --- generation (the latent DDIM) ---------------------------------------------------

  def _latent_model(self):
    """(config with the latent DDIM's own latent.* settings, net, state)."""
    if self._latent is None:
      if self.workdir is None:
        raise FileNotFoundError("this model was not loaded from a workdir, so it has no "
                                "latent DDIM checkpoint")
      self._latent = latent.load_generator(self.workdir, self.config)
    return self._latent

  @property
  def latent_step(self) -> int:
    """The latent DDIM checkpoint's step."""
    return int(self._latent_model()[2].step)

  def sample_all(self, n: int, seed: int = 0) -> dict:
    """n unconditional samples -> {"images" (n, H, W, C) in [-1, 1], "z_sem"
    (n, code_dim), "x_T"}: decode(z_sem, x_T) with sample.image_steps steps
    gives the images again."""
    if not isinstance(n, (int, np.integer)) or n < 1:
      raise InputError(f"n = {n!r}: give the number of images, an integer >= 1")
    config, net, state = self._latent_model()
    return latent.generate(config, self.models, self.params, net, state, int(n), int(seed))

  def sample(self, n: int, seed: int = 0) -> np.ndarray:
    """n unconditional samples (n, H, W, C) in [-1, 1]; the same seed gives
    the same images."""
    return self.sample_all(n, seed)["images"]

  def sample_traversals(self, n: int, strengths, kind: str = "mu_s", seed: int = 0,
                        which: Sequence[int] | None = None) -> np.ndarray:
    """The first n samples of `seed`, each moved along every direction (or
    those in `which`) at each strength (F,) in std units -> (n, K, F, H, W,
    C); strength 0 is the sample itself."""
    directions, sigma = self.directions(kind)
    which = self._which(directions, which, kind)
    strengths = self._strengths(strengths)
    drawn = self.sample_all(n, seed)
    config = self._latent_model()[0]
    return np.asarray(inference.decode_along(
        self.models, self.process(config.sample.image_steps, config.sample.guidance),
        self.params,
        jnp.asarray(drawn["z_sem"]), jnp.asarray(drawn["x_T"]),
        jnp.asarray(directions[which]), jnp.asarray(sigma[which, None] * strengths[None, :])))
