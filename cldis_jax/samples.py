"""Picture grids of a model during and after training (from the EMA parameters).

- `recon`: rows = input, Diff-AE reconstruction (z_sem plus the x_T found by
  DDIM inversion, decoded by DDIM), beta-VAE reconstruction; columns = images.
- `traverse_mu_s`: one source image; row j sweeps axis j of mu_s, the
  distilled code every metric evaluates, over [-range, range]. z_sem moves
  along the head's pseudo-inverse row j (the smallest change of z_sem that
  moves only mu_s[j]) and is decoded by DDIM from the image's inverted x_T.
  The first column is the source image.
- `traverse_vae`: the same sweep of the beta-VAE mean through its decoder.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import diffusion, grids, models as models_lib
from cldis_jax.models.beta_vae import decoded_image
from cldis_jax.models.heads import mu_directions


def to_uint8(images) -> np.ndarray:
  """[-1, 1] -> uint8."""
  return np.asarray(np.clip((np.asarray(images) + 1.0) * 127.5 + 0.5, 0, 255), np.uint8)


def _eps_fn(models, params, z_sem):
  return lambda x, t: models_lib.denoise(models, params, x, t, z_sem)


@functools.partial(jax.jit, static_argnums=(0, 1))
def traverse_mu_s(models, process: diffusion.Diffusion, params, x0, values):
  """x0 (1, H, W, C), values (n,) -> (latent_dim, n, H, W, C) images in [-1, 1]:
  axis j of mu_s set to each value (a `diffae_traversals` from the source's own
  mu_s along the head's pseudo-inverse rows)."""
  z_sem = models.diffae.apply({"params": params["diffae"]}, x0, method="encode")
  mu_s, _ = models.head.apply({"params": params["head"]}, z_sem)
  strengths = values[None, :] - mu_s[0][:, None]
  return diffae_traversals(models, process, params, x0, mu_directions(params["head"]),
                           strengths)[0]


@functools.partial(jax.jit, static_argnums=0)
def traverse_vae(models, params, x0, values):
  """x0 (1, H, W, C), values (n,) -> (latent_dim, n, H, W, C) images in [-1, 1]:
  axis j of the VAE mean set to each value."""
  mu, _ = models.vae.apply({"params": params["vae"]}, x0, method="encode")
  return vae_traversals(models, params, x0, values[None, :] - mu[0][:, None])[0]


@functools.partial(jax.jit, static_argnums=0)
def encode(models, params, x0):
  """Images (N, H, W, C) in [-1, 1] -> z_sem (N, z_dim)."""
  return models.diffae.apply({"params": params["diffae"]}, x0, method="encode")


@functools.partial(jax.jit, static_argnums=(0, 1))
def invert(models, process: diffusion.Diffusion, params, x0, z_sem):
  """The stochastic code x_T of images x0 by DDIM inversion under z_sem."""
  return process.ddim_invert(_eps_fn(models, params, z_sem), x0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def decode(models, process: diffusion.Diffusion, params, z_sem, x_T):
  """DDIM decoding of (z_sem, x_T) -> images (N, H, W, C) in [-1, 1]."""
  return process.ddim_sample(_eps_fn(models, params, z_sem), x_T)


@functools.partial(jax.jit, static_argnums=(0, 1))
def reconstruct(models, process: diffusion.Diffusion, params, x0):
  """(Diff-AE reconstruction through inverted x_T, beta-VAE reconstruction)."""
  z_sem = encode(models, params, x0)
  diffae_recon = decode(models, process, params, z_sem, invert(models, process, params, x0, z_sem))
  mu, _ = models.vae.apply({"params": params["vae"]}, x0, method="encode")
  vae_recon = decoded_image(models.vae.apply({"params": params["vae"]}, mu, method="decode"))
  return diffae_recon, vae_recon


@functools.partial(jax.jit, static_argnums=(0, 1))
def decode_along(models, process: diffusion.Diffusion, params, z_sem, x_T, directions,
                 strengths):
  """Codes z_sem (N, z_dim) with x_T (N, H, W, C); directions (K, z_dim),
  strengths (K, F) -> (N, K, F, H, W, C): z_sem + strength * direction
  decoded by DDIM from each source's x_T, one source at a time."""
  k, f = strengths.shape

  def one_source(args):
    z, x = args
    zs = (z[None, None, :] + strengths[..., None] * directions[:, None, :]).reshape(k * f, -1)
    frames = process.ddim_sample(_eps_fn(models, params, zs),
                                 jnp.broadcast_to(x, (k * f,) + x.shape))
    return frames.reshape((k, f) + x.shape)

  return jax.lax.map(one_source, (z_sem, x_T))


def diffae_traversals(models, process: diffusion.Diffusion, params, x0, directions, strengths):
  """Sources x0 (N, H, W, C); z_sem directions (K, z_dim); strengths (K, F)
  -> (N, K, F, H, W, C) in [-1, 1]: z_sem + strength * direction decoded by
  DDIM from each source's inverted x_T (strength 0 reconstructs the source)."""
  z_sem = encode(models, params, x0)
  x_T = invert(models, process, params, x0, z_sem)
  return decode_along(models, process, params, z_sem, x_T, directions, strengths)


def slerp(a, b, alpha):
  """Spherical interpolation of flattened a, b (N, ...) at alpha (F,) ->
  (N, F, ...), the angle from their cosine (Diff-AE's interpolate notebook)."""
  fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
  cos = jnp.sum(fa * fb, -1) / (jnp.linalg.norm(fa, axis=-1) * jnp.linalg.norm(fb, axis=-1))
  theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None]
  sin = jnp.maximum(jnp.sin(theta), 1e-8)
  wa = jnp.where(theta > 1e-4, jnp.sin((1 - alpha) * theta) / sin, 1 - alpha)
  wb = jnp.where(theta > 1e-4, jnp.sin(alpha * theta) / sin, alpha)
  out = wa[..., None] * fa[:, None] + wb[..., None] * fb[:, None]
  return out.reshape((a.shape[0], alpha.shape[0]) + a.shape[1:])


@functools.partial(jax.jit, static_argnums=(0, 1))
def interpolate(models, process: diffusion.Diffusion, params, z_a, z_b, x_T_a, x_T_b, alpha):
  """Pairs (z_a, x_T_a) -> (z_b, x_T_b), N each, at alpha (F,) -> (N, F, H, W, C):
  z_sem linearly, x_T spherically, decoded by DDIM."""
  n, f = z_a.shape[0], alpha.shape[0]
  z = z_a[:, None] + alpha[None, :, None] * (z_b - z_a)[:, None]
  x_T = slerp(x_T_a, x_T_b, alpha)
  images = process.ddim_sample(_eps_fn(models, params, z.reshape(n * f, -1)),
                               x_T.reshape((n * f,) + x_T_a.shape[1:]))
  return images.reshape((n, f) + x_T_a.shape[1:])


@functools.partial(jax.jit, static_argnums=0)
def vae_traversals(models, params, x0, strengths):
  """Sources x0 (N, H, W, C), strengths (d_v, F) along each axis of the VAE
  mean -> (N, d_v, F, H, W, C) in [-1, 1]."""
  vparams = {"params": params["vae"]}
  mu, _ = models.vae.apply(vparams, x0, method="encode")
  d, f = strengths.shape
  z = (mu[:, None, None, :] + strengths[None, :, :, None]
       * jnp.eye(d, dtype=mu.dtype)[None, :, None, :])
  logits = models.vae.apply(vparams, z.reshape(-1, d), method="decode")
  return decoded_image(logits).reshape((x0.shape[0], d, f) + x0.shape[1:])


@functools.lru_cache(maxsize=8)
def sampling_process(beta_schedule: str, num_timesteps: int, steps: int) -> diffusion.Diffusion:
  """The respaced DDIM process, one object per setting (jitted samplers take it
  as a static argument, hashed by identity)."""
  return diffusion.Diffusion.create(beta_schedule, num_timesteps).respace(steps)


def sample_grids(models, config, params, x0) -> dict[str, np.ndarray]:
  """All grids as uint8 images, keyed by name. x0: preview images in [-1, 1]."""
  s, d = config.samples, config.diffusion
  process = sampling_process(d.beta_schedule, d.num_timesteps, d.sample_steps)
  values = jnp.linspace(-s.traversal_range, s.traversal_range, s.traversal_steps)
  diffae_recon, vae_recon = reconstruct(models, process, params, x0)
  source = x0[:1]
  source_column = lambda t: np.concatenate(
      [np.broadcast_to(np.asarray(source)[None], (t.shape[0], 1) + source.shape[1:]),
       np.asarray(t)], axis=1)
  return {
      "recon": grids.tile(to_uint8(np.stack([x0, diffae_recon, vae_recon]))),
      "traverse_mu_s": grids.tile(to_uint8(source_column(
          traverse_mu_s(models, process, params, source, values)))),
      "traverse_vae": grids.tile(to_uint8(source_column(
          traverse_vae(models, params, source, values)))),
  }


def save_grids(workdir: str, step: int, images: dict[str, np.ndarray], image_size: int):
  """PNGs as <workdir>/samples/<name>_<step>.png, cells enlarged to >= 64 px."""
  scale = max(1, 64 // image_size)
  return [grids.save_png(os.path.join(workdir, "samples", f"{name}_{step:08d}.png"), image,
                         scale) for name, image in images.items()]
