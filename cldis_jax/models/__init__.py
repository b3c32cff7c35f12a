"""The CL-Dis networks: the Diff-AE backbone, the beta-VAE co-pilot and the head.

`build_models(config.model)` turns the model section of a config into the three
Linen modules; `init_params` initialises all of them with one jitted function,
and `abstract_params` gives their shapes without allocating anything.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cldis_jax import errors
from cldis_jax.config_lib import check_known_keys
from cldis_jax.models.beta_vae import BetaVAE
from cldis_jax.models.diffae import DiffAE
from cldis_jax.models.encoder import SemanticEncoder
from cldis_jax.models.heads import HEAD_INITS, DistillHead
from cldis_jax.models.unet import UNet

__all__ = ["BetaVAE", "DiffAE", "DistillHead", "Models", "SemanticEncoder", "UNet",
           "abstract_params", "build_models", "condition", "denoise", "init_params"]

MODEL_KEYS = ("image_size", "in_channels", "latent_dim", "dtype", "condition", "head_init",
              "diffae", "vae")
# What the denoiser is conditioned on: z_sem (Diff-AE), or the distilled mean
# mu_s mapped back to z_dim by the head (the diffusion loss then shapes mu_s).
CONDITIONS = ("z_sem", "mu_s")


class Models(NamedTuple):
  diffae: DiffAE
  vae: BetaVAE
  head: DistillHead


def _module_fields(cls, exclude):
  names = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  return names - set(exclude)


def _make(cls, sub, where, **shared):
  # Tuples, not lists: modules are static (hashed) arguments of jitted functions.
  sub = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(sub).items()}
  check_known_keys(sub, _module_fields(cls, shared), where)
  return cls(**shared, **sub)


def build_models(model_config) -> Models:
  """config.model -> Models. Unknown keys raise a ValueError naming them."""
  check_known_keys(model_config, MODEL_KEYS, "model")
  condition = model_config.get("condition", "z_sem")
  if condition not in CONDITIONS:
    raise errors.ConfigError(f"model.condition = {condition!r} is not a condition; "
                             f"valid: {', '.join(CONDITIONS)}")
  head_init = model_config.get("head_init", "random")
  if head_init not in HEAD_INITS:
    raise errors.ConfigError(f"model.head_init = {head_init!r}; valid: {', '.join(HEAD_INITS)}")
  z_dim = model_config.diffae.get("z_dim", DiffAE.z_dim)
  shared = dict(image_size=model_config.image_size,
                in_channels=model_config.in_channels, dtype=model_config.dtype)
  return Models(
      diffae=_make(DiffAE, model_config.diffae, "model.diffae", **shared),
      vae=_make(BetaVAE, model_config.vae, "model.vae",
                latent_dim=model_config.latent_dim, **shared),
      head=DistillHead(model_config.latent_dim, z_dim=z_dim,
                       condition_dim=z_dim if condition == "mu_s" else 0,
                       start=head_init))


def condition(models: Models, params, z_sem, code_noise=None):
  """What the denoiser sees for semantic codes z_sem: z_sem itself, or (with
  `model.condition = "mu_s"`) the head's expand(mu_s). `code_noise` (same
  shape as mu_s) conditions on the sample mu_s + sigma_s * code_noise instead
  (training only). Every decoder (training, sampling, navigation, editing)
  goes through here, so moving z_sem moves what the denoiser sees."""
  if not models.head.condition_dim:
    return z_sem
  head = {"params": params["head"]}
  mu, logvar = models.head.apply(head, z_sem)
  if code_noise is not None:
    mu = mu + jnp.exp(0.5 * logvar) * code_noise
  return models.head.apply(head, mu, method="condition")


def denoise(models: Models, params, x_t, t, z_sem, **kw):
  """eps_theta(x_t, t, condition(z_sem)) with the full parameter dict."""
  return models.diffae.apply({"params": params["diffae"]}, x_t, t,
                             condition(models, params, z_sem), method="denoise", **kw)


def _init(models: Models, rng, batch_size: int = 1):
  d = models.diffae
  x = jnp.zeros((batch_size, d.image_size, d.image_size, d.in_channels), jnp.float32)
  t = jnp.zeros((batch_size,), jnp.int32)
  k_diffae, k_vae, k_head, k_reparam = jax.random.split(rng, 4)
  return {
      "diffae": d.init(k_diffae, x, x, t)["params"],
      "vae": models.vae.init(k_vae, x, k_reparam)["params"],
      "head": models.head.init(k_head, jnp.zeros((batch_size, d.z_dim)))["params"],
  }


_init_jitted = jax.jit(_init, static_argnums=0)


def init_params(models: Models, rng) -> dict[str, Any]:
  """All parameters, {'diffae', 'vae', 'head'}, initialised by one jitted call."""
  return _init_jitted(models, rng)


def abstract_params(models: Models) -> dict[str, Any]:
  """Shapes and dtypes of `init_params` (jax.ShapeDtypeStruct leaves), no allocation."""
  return jax.eval_shape(functools.partial(_init, models), jax.random.key(0))
