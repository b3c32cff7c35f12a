"""Inference with a trained model's parameters, jitted: encode to z_sem,
invert to x_T by DDIM, decode (z_sem, x_T), decode along directions of z_sem,
interpolate between images, and the beta-VAE's own traversals.

Every function takes the `models` and the diffusion `process` as static
arguments (build the process with `diffusion.process`, which returns one object
per setting, so each setting compiles once); images are (N, H, W, C) in
[-1, 1].
"""

import functools

import jax
import jax.numpy as jnp

from cldis_jax import diffusion, errors, models as models_lib
from cldis_jax.models.beta_vae import decoded_image
from cldis_jax.models.labelled import factor_slice


def check_dropout_and_guidance(config) -> None:
  """objective.code_dropout and model.diffae.skip_dropout in [0, 1); edit/sample
  guidance >= 0, and != 1 only with code dropout."""
  rate = config.objective.code_dropout
  for key, value in (("objective.code_dropout", rate),
                     ("model.diffae.skip_dropout", config.model.diffae.get("skip_dropout", 0.0))):
    if not 0 <= value < 1:
      raise errors.ConfigError(f"{key} = {value!r}; valid: 0 <= rate < 1")
  for key in ("edit", "sample"):
    w = config[key].guidance
    if not w >= 0:
      raise errors.ConfigError(f"{key}.guidance = {w!r}; valid: a number >= 0 (1: none)")
    if w != 1 and not rate:
      raise errors.ConfigError(f"{key}.guidance = {w!r} needs a model trained with "
                               f"objective.code_dropout > 0 (the null code); use 1")


def _model_fn(models, process, params, z_sem):
  """The denoiser under codes z_sem; with process.guidance w != 1,
  classifier-free: out(null) + w * (out(z_sem) - out(null)), the null code
  all zeros (the condition objective.code_dropout trained)."""
  conditional = lambda x, t: models_lib.denoise(models, params, x, t, z_sem)
  w = process.guidance
  if w == 1.0:
    return conditional

  def guided(x, t):
    null = models_lib.denoise_null(models, params, x, t)
    return null + w * (conditional(x, t) - null)

  return guided


@functools.partial(jax.jit, static_argnums=0)
def encode(models, params, x0):
  """Images (N, H, W, C) in [-1, 1] -> z_sem (N, z_dim)."""
  return models_lib.semantic_code(models, params, x0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def invert(models, process: diffusion.Diffusion, params, x0, z_sem):
  """The stochastic code x_T of images x0 by DDIM inversion under z_sem
  (never guided: inversion reads the code the image was encoded to)."""
  return process.ddim_invert(lambda x, t: models_lib.denoise(models, params, x, t, z_sem), x0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def decode(models, process: diffusion.Diffusion, params, z_sem, x_T):
  """DDIM decoding of (z_sem, x_T) -> images (N, H, W, C) in [-1, 1]."""
  return process.ddim_sample(_model_fn(models, process, params, z_sem), x_T)


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
    frames = process.ddim_sample(_model_fn(models, process, params, zs),
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


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def decode_with_part(models, process: diffusion.Diffusion, params, part: tuple[int, int],
                     z_sem, x_T, part_codes):
  """Codes z_sem (N, code_dim) with x_T (N, H, W, C), the dims [start, stop)
  of `part` set to each row of part_codes (V, stop - start) -> (N, V, H, W,
  C) by DDIM (a labelled factor set to each value, a block swapped in from
  each donor)."""
  n, v = z_sem.shape[0], part_codes.shape[0]
  codes = jnp.broadcast_to(z_sem[:, None], (n, v, z_sem.shape[-1]))
  codes = codes.at[:, :, part[0]:part[1]].set(
      jnp.broadcast_to(part_codes[None], (n,) + part_codes.shape))
  noise = jnp.broadcast_to(x_T[:, None], (n, v) + x_T.shape[1:])
  images = process.ddim_sample(_model_fn(models, process, params, codes.reshape(n * v, -1)),
                               noise.reshape((n * v,) + x_T.shape[1:]))
  return images.reshape((n, v) + x_T.shape[1:])


def decode_with_factor(models, process: diffusion.Diffusion, params, f: int, z_sem, x_T,
                       factor_codes):
  """Labelled factor f's code set to each of factor_codes (V, factor_dim) ->
  (N, V, H, W, C) (`decode_with_part`)."""
  part = factor_slice(models.labels, f)
  return decode_with_part(models, process, params, (part.start, part.stop), z_sem, x_T,
                          factor_codes)


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
  images = process.ddim_sample(_model_fn(models, process, params, z.reshape(n * f, -1)),
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
