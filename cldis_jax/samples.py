"""Picture grids of a model during and after training (from the EMA parameters).

- `recon`: rows = input, Diff-AE reconstruction (z_sem plus the x_T found by
  DDIM inversion, decoded by DDIM), beta-VAE reconstruction; columns = images.
- `traverse_mu_s`: one source image; row j sweeps axis j of mu_s, the
  distilled code every metric evaluates, over [-range, range]. z_sem moves
  along the head's pseudo-inverse row j (the smallest change of z_sem that
  moves only mu_s[j]) and is decoded by DDIM from the image's inverted x_T.
  The first column is the source image.
- `traverse_vae`: the same sweep of the beta-VAE mean through its decoder.
- `labels_<factor>` (runs with labelled factors): rows = the preview images,
  the first column the input, then the factor set to each of its values (its
  table row), everything else kept, decoded from each image's inverted x_T.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import diffusion, grids, models as models_lib
from cldis_jax.inference import (decode, decode_with_factor, diffae_traversals, encode, invert,
                                 vae_traversals)
from cldis_jax.models.beta_vae import decoded_image


@functools.partial(jax.jit, static_argnums=(0, 1))
def traverse_mu_s(models, process: diffusion.Diffusion, params, x0, values):
  """x0 (1, H, W, C), values (n,) -> (latent_dim, n, H, W, C) images in [-1, 1]:
  axis j of mu_s set to each value (a `diffae_traversals` from the source's own
  mu_s along the head's pseudo-inverse rows)."""
  z_sem = models_lib.semantic_code(models, params, x0)
  mu_s, _ = models_lib.distilled(models, params, z_sem)
  strengths = values[None, :] - mu_s[0][:, None]
  return diffae_traversals(models, process, params, x0, models_lib.mu_directions(models, params),
                           strengths)[0]


@functools.partial(jax.jit, static_argnums=0)
def traverse_vae(models, params, x0, values):
  """x0 (1, H, W, C), values (n,) -> (latent_dim, n, H, W, C) images in [-1, 1]:
  axis j of the VAE mean set to each value."""
  mu, _ = models.vae.apply({"params": params["vae"]}, x0, method="encode")
  return vae_traversals(models, params, x0, values[None, :] - mu[0][:, None])[0]


@functools.partial(jax.jit, static_argnums=(0, 1))
def reconstruct(models, process: diffusion.Diffusion, params, x0):
  """(Diff-AE reconstruction through inverted x_T, beta-VAE reconstruction)."""
  z_sem = encode(models, params, x0)
  diffae_recon = decode(models, process, params, z_sem, invert(models, process, params, x0, z_sem))
  mu, _ = models.vae.apply({"params": params["vae"]}, x0, method="encode")
  vae_recon = decoded_image(models.vae.apply({"params": params["vae"]}, mu, method="decode"))
  return diffae_recon, vae_recon


def set_factor(models, process: diffusion.Diffusion, params, f: int, x0):
  """x0 (N, H, W, C) -> (N, values, H, W, C): labelled factor f set to each value."""
  z_sem = encode(models, params, x0)
  return decode_with_factor(models, process, params, f, z_sem,
                            invert(models, process, params, x0, z_sem),
                            params["labels"][f"table_{f}"])


def sample_grids(models, config, params, x0) -> dict[str, np.ndarray]:
  """All grids as uint8 images, keyed by name. x0: preview images in [-1, 1]."""
  s = config.samples
  process = diffusion.process(config.diffusion, config.diffusion.sample_steps)
  values = jnp.linspace(-s.traversal_range, s.traversal_range, s.traversal_steps)
  diffae_recon, vae_recon = reconstruct(models, process, params, x0)
  source = x0[:1]
  source_column = lambda t: np.concatenate(
      [np.broadcast_to(np.asarray(source)[None], (t.shape[0], 1) + source.shape[1:]),
       np.asarray(t)], axis=1)
  labelled = {} if models.labels is None else {
      f"labels_{name}": grids.tile(grids.to_uint8(np.concatenate(
          [np.asarray(x0)[:, None], np.asarray(set_factor(models, process, params, f, x0))],
          axis=1)))
      for f, name in enumerate(config.model.labels.factors)}
  return {
      **labelled,
      "recon": grids.tile(grids.to_uint8(np.stack([x0, diffae_recon, vae_recon]))),
      "traverse_mu_s": grids.tile(grids.to_uint8(source_column(
          traverse_mu_s(models, process, params, source, values)))),
      "traverse_vae": grids.tile(grids.to_uint8(source_column(
          traverse_vae(models, params, source, values)))),
  }


def save_grids(workdir: str, step: int, images: dict[str, np.ndarray], image_size: int):
  """PNGs as <workdir>/samples/<name>_<step>.png, cells enlarged to >= 64 px."""
  scale = grids.scale_for(image_size)
  return [grids.save_png(os.path.join(workdir, "samples", f"{name}_{step:08d}.png"), image,
                         scale) for name, image in images.items()]
