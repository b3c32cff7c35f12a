"""The codes the metrics evaluate, encoded from a source's images once.

Three representations (`REPRESENTATIONS`, docs/method.md):
- `mu_s`: the distilled head's mean on z_sem (d_v dims), the default;
- `vae_mu`: the beta-VAE encoder mean;
- `z_sem_pca`: z_sem projected on its first d_v principal components, fitted
  on the reference images (DisDiff/EncDiff reduce their tokens with a PCA in
  the same spirit).

`CodeTable` encodes rows on first request and keeps them, so a metric that
asks for row indices (the disentanglement_lib route of DisDiff / EncDiff,
`metrics.protocol`) gets exactly what encoding the whole data set first would
give, without encoding images no metric draws. `encode_all()` is that
whole-set route. Each batch is split over every local device.
"""

import functools
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import data, models as models_lib, parallel

REPRESENTATIONS = ("mu_s", "vae_mu", "z_sem_pca")


@functools.partial(jax.jit, static_argnums=(0, 3))
def encode_batch(models, params, x, branches=("diffae", "vae")):
  """Images (B, H, W, C) in [-1, 1] -> mu_s, vae_mu, z_sem (float32); only
  the codes of the networks in `branches` ("diffae": mu_s and z_sem)."""
  f32 = lambda a: a.astype(jnp.float32)
  out = {}
  if "diffae" in branches:
    z_sem = models_lib.semantic_code(models, params, x)
    mu_s, _ = models_lib.distilled(models, params, z_sem)
    out.update(mu_s=f32(mu_s), z_sem=f32(z_sem))
  if "vae" in branches:
    mu, _ = models.vae.apply({"params": params["vae"]}, x, method="encode")
    out["vae_mu"] = f32(mu)
  return out


def branches_of(representations) -> tuple[str, ...]:
  """The networks that the representations need."""
  return tuple(b for b, reps in (("diffae", ("mu_s", "z_sem_pca")), ("vae", ("vae_mu",)))
               if any(r in reps for r in representations))


def fit_pca(x: np.ndarray, num_components: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], components [k, D]) of the rows of x (signs fixed so that each
  component's largest entry is positive, for repeatable codes)."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  components = vt[:num_components]
  signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])
  return mean, components * signs[:, None]


class CodeTable:
  """Codes of every row of `source`, filled in as rows are requested."""

  def __init__(self, source, models, params, *, batch_size: int = 256,
               reference_images: int = 10_000, seed: int = 0,
               representations=REPRESENTATIONS, devices=None):
    self.source, self.models = source, models
    self.branches = branches_of(representations)
    # every local device encodes a slice of each batch (the codes of an image
    # do not depend on the others in its batch)
    self.mesh = parallel.data_mesh(jax.local_devices() if devices is None else devices)
    self.params = jax.device_put(params, parallel.replicated(self.mesh))
    self.batch_size = -(-batch_size // self.mesh.size) * self.mesh.size
    self.num_rows = len(source)
    d = models.head.latent_dim
    self.codes = {name: np.zeros((self.num_rows, d), np.float32) for name in REPRESENTATIONS}
    self.have = np.zeros(self.num_rows, bool)
    self.encoded_images, self.encode_seconds = 0, 0.0
    rng = np.random.RandomState(seed)
    self.reference = np.sort(rng.choice(self.num_rows, min(reference_images, self.num_rows),
                                        replace=False))
    z_sem = self._encode(self.reference, keep_z_sem=True)
    if z_sem is not None:
      self.pca_mean, self.pca_components = fit_pca(z_sem, d)
      self.codes["z_sem_pca"][self.reference] = self._project(z_sem)

  def _project(self, z_sem):
    return ((z_sem - self.pca_mean) @ self.pca_components.T).astype(np.float32)

  def _encode(self, rows: np.ndarray, keep_z_sem: bool = False):
    """Encodes `rows` (no duplicates), storing their codes."""
    kept, start, last_log = [], time.perf_counter(), time.perf_counter()
    for i in range(0, len(rows), self.batch_size):
      chunk = rows[i:i + self.batch_size]
      images = data.images_at(self.source, chunk)
      pad = self.batch_size - len(chunk)
      if pad:
        images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
      images = jax.device_put(images, parallel.batch_sharding(self.mesh))
      out = jax.device_get(encode_batch(self.models, self.params, images, self.branches))
      out = {k: v[:len(chunk)] for k, v in out.items()}
      for name in ("mu_s", "vae_mu"):
        if name in out:
          self.codes[name][chunk] = out[name]
      if "z_sem" in out and keep_z_sem:
        kept.append(out["z_sem"])
      elif "z_sem" in out:
        self.codes["z_sem_pca"][chunk] = self._project(out["z_sem"])
      self.have[chunk] = True
      now = time.perf_counter()
      if now - last_log > 10 or (i + self.batch_size >= len(rows) and len(rows) > 4096):
        done = min(i + self.batch_size, len(rows))
        logging.info("encoded %d/%d images (%.0f img/s)", done, len(rows),
                     done / (now - start))
        last_log = now
    self.encoded_images += len(rows)
    self.encode_seconds += time.perf_counter() - start
    return np.concatenate(kept) if kept else None

  def ensure(self, indices) -> None:
    missing = np.unique(np.asarray(indices).reshape(-1))
    missing = missing[~self.have[missing]]
    if len(missing):
      self._encode(missing)

  def encode_all(self) -> None:
    self.ensure(np.arange(self.num_rows))

  def representation(self, name: str):
    """A `metrics.protocol.Representation`: row indices -> codes [n, d_v]."""
    if name not in REPRESENTATIONS:
      raise ValueError(f"representation {name!r} is not one of {REPRESENTATIONS}")
    if branches_of((name,))[0] not in self.branches:
      raise ValueError(f"representation {name!r} was not encoded by this table")

    def lookup(indices):
      self.ensure(indices)
      return self.codes[name][np.asarray(indices)]
    return lookup

  def scale(self, name: str) -> np.ndarray:
    """Per-coordinate std of a representation over the reference images."""
    return self.codes[name][self.reference].std(axis=0)


def encode_z_sem(models, params, source, rows, *, batch_size: int = 256,
                 devices=None) -> np.ndarray:
  """The semantic codes (len(rows), code_dim) of `source`'s `rows`, each
  batch split over the local devices (or `devices`)."""
  mesh = parallel.data_mesh(jax.local_devices() if devices is None else devices)
  params = jax.device_put(params, parallel.replicated(mesh))
  batch_size = -(-batch_size // mesh.size) * mesh.size
  out, start, last_log = [], time.perf_counter(), time.perf_counter()
  for i in range(0, len(rows), batch_size):
    chunk = rows[i:i + batch_size]
    images = data.images_at(source, chunk)
    images = np.concatenate([images, np.repeat(images[-1:], batch_size - len(chunk), axis=0)])
    images = jax.device_put(images, parallel.batch_sharding(mesh))
    z = encode_batch(models, params, images, ("diffae",))["z_sem"]
    out.append(np.asarray(z, np.float32)[:len(chunk)])
    if time.perf_counter() - last_log > 10:
      last_log = time.perf_counter()
      logging.info("encoded %d/%d images (%.0f img/s)", i + len(chunk), len(rows),
                   (i + len(chunk)) / (last_log - start))
  return np.concatenate(out)


def zsem_moments(models, params, source, *, num_images: int, batch_size: int = 256,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(mean [z_dim], covariance [z_dim, z_dim]) of z_sem over `num_images`
  images drawn without replacement from `source` (float64)."""
  rows = np.sort(np.random.RandomState(seed).choice(
      len(source), min(num_images, len(source)), replace=False))
  z = encode_z_sem(models, params, source, rows, batch_size=batch_size).astype(np.float64)
  return z.mean(axis=0), np.cov(z, rowvar=False)
