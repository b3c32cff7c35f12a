"""The CL-Dis networks: the Diff-AE backbone, the VAE co-pilot and the head
(with `model.copilot = "factor_vae"`, also FactorVAE's discriminator).

`build_models(config.model)` turns the model section of a config into the
Linen modules (with `model.labels.factors` named, also the labelled-factor
code); `init_params` initialises all of them with one jitted function, and
`abstract_params` gives their shapes without allocating anything.

`semantic_code` is the code the denoiser is conditioned on: the encoder's
z_sem, or with labelled factors [factor codes | residual]. Every program that
encodes an image goes through it.
"""

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import copilots, errors
from cldis_jax.config_lib import check_known_keys
from cldis_jax.models.beta_vae import BetaVAE
from cldis_jax.models.discriminator import Discriminator
from cldis_jax.models.diffae import DiffAE
from cldis_jax.models.encoder import POOLS, SemanticEncoder
from cldis_jax.models import heads
from cldis_jax.models.heads import HEAD_INITS, DistillHead
from cldis_jax.models.labelled import LabelledCode, residual_slice
from cldis_jax.models.unet import UNet

__all__ = ["BetaVAE", "DiffAE", "Discriminator", "DistillHead", "LabelledCode", "Models",
           "SemanticEncoder", "UNet", "abstract_params", "build_models", "condition", "denoise", "distilled",
           "head_input", "init_params", "mu_directions", "mu_std", "semantic_code",
           "semantic_parts"]

MODEL_KEYS = ("image_size", "in_channels", "latent_dim", "dtype", "condition", "head_init",
              "diffae", "vae", "labels", "copilot", "discriminator")
LABEL_KEYS = ("factors", "sizes", "factor_dim", "residual_dim", "table_std")
# What the denoiser is conditioned on: z_sem (Diff-AE), or the distilled mean
# mu_s mapped back to z_dim by the head (the diffusion loss then shapes mu_s).
CONDITIONS = ("z_sem", "mu_s")


class Models(NamedTuple):
  diffae: DiffAE
  vae: BetaVAE
  head: DistillHead
  labels: LabelledCode | None = None  # labelled factors (model.labels), or None
  copilot: str = "beta_vae"  # the VAE's objective (cldis_jax.copilots)
  discriminator: Discriminator | None = None  # FactorVAE's, or None

  @property
  def code_dim(self) -> int:
    """Width of the semantic code the denoiser sees."""
    return self.labels.code_dim if self.labels is not None else self.diffae.z_dim


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
  enc_pool = model_config.diffae.get("enc_pool", "mean")
  if enc_pool not in POOLS:
    raise errors.ConfigError(f"model.diffae.enc_pool = {enc_pool!r}; valid: {', '.join(POOLS)}")
  z_dim = model_config.diffae.get("z_dim", DiffAE.z_dim)
  labels = _labelled_code(model_config.get("labels"), z_dim)
  if labels is not None and condition != "z_sem":
    raise errors.ConfigError(f"model.condition = {condition!r} with labelled factors "
                             "(model.labels.factors); valid with labels: 'z_sem'")
  shared = dict(image_size=model_config.image_size,
                in_channels=model_config.in_channels, dtype=model_config.dtype)
  # With labels the head reads the residual: the co-pilot's loop disentangles
  # what the labels do not name.
  head_in = labels.residual_dim if labels is not None else z_dim
  copilot = model_config.get("copilot", "beta_vae")
  discriminator = None
  if copilots.has_discriminator(copilot):
    discriminator = _make(Discriminator, model_config.get("discriminator", {}),
                          "model.discriminator")
  return Models(
      diffae=_make(DiffAE, model_config.diffae, "model.diffae", **shared),
      vae=_make(BetaVAE, model_config.vae, "model.vae",
                latent_dim=model_config.latent_dim, **shared),
      head=DistillHead(model_config.latent_dim, z_dim=head_in,
                       condition_dim=z_dim if condition == "mu_s" else 0,
                       start=head_init),
      labels=labels, copilot=copilot, discriminator=discriminator)


def _labelled_code(labels_config, z_dim: int) -> LabelledCode | None:
  """model.labels -> the labelled-factor code, None when no factor is named."""
  if not labels_config or not labels_config.get("factors"):
    return None
  check_known_keys(labels_config, LABEL_KEYS, "model.labels")
  factors, sizes = tuple(labels_config.factors), tuple(labels_config.get("sizes", ()))
  if len(sizes) != len(factors) or any(
      isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in sizes):
    raise errors.ConfigError(
        f"model.labels.sizes = {sizes!r} for factors {factors!r}; valid: one integer >= 2 "
        "per factor (its number of values)")
  factor_dim = labels_config.get("factor_dim", 1)
  residual_dim = labels_config.get("residual_dim", 0) or z_dim - len(factors) * factor_dim
  if factor_dim < 1 or residual_dim < 1:
    raise errors.ConfigError(
        f"model.labels: factor_dim = {factor_dim}, residual_dim = {residual_dim}; valid: "
        f"both >= 1 (residual_dim 0 means z_dim - factors * factor_dim = "
        f"{z_dim - len(factors) * factor_dim})")
  return LabelledCode(sizes=sizes, factor_dim=factor_dim, residual_dim=residual_dim,
                      features=z_dim, table_std=labels_config.get("table_std", 1.0))


def semantic_code(models: Models, params, x0, labels=None):
  """Clean images -> the code the denoiser is conditioned on (B, code_dim):
  z_sem, or with labelled factors [factor codes | residual], where `labels`
  (B, k) ints (-1 unknown) pick the known values' table rows (training)."""
  return semantic_parts(models, params, x0, labels)["code"]


def semantic_parts(models: Models, params, x0, labels=None) -> dict:
  """{"code"} and with labelled factors also {"factor_codes", "residual",
  "logits"} (models.labelled.LabelledCode)."""
  z = models.diffae.apply({"params": params["diffae"]}, x0, method="encode")
  if models.labels is None:
    return dict(code=z)
  return models.labels.apply({"params": params["labels"]}, z, labels)


def head_input(models: Models, code):
  """What the distillation head reads of a semantic code: all of it, or the
  residual when factors are labelled."""
  if models.labels is None:
    return code
  return code[..., residual_slice(models.labels)]


def distilled(models: Models, params, code):
  """(mu_s, logvar_s) of semantic codes (B, code_dim)."""
  return models.head.apply({"params": params["head"]}, head_input(models, code))


def mu_directions(models: Models, params) -> jnp.ndarray:
  """(latent_dim, code_dim): row j moves mu_s by +1 along axis j and nothing
  else (`heads.mu_directions`), zero outside what the head reads."""
  rows = heads.mu_directions(params["head"])
  if models.labels is None:
    return rows
  out = jnp.zeros((rows.shape[0], models.code_dim), rows.dtype)
  return out.at[:, residual_slice(models.labels)].set(rows)


def mu_std(models: Models, params, code_cov) -> np.ndarray:
  """(latent_dim,): the std of each axis of mu_s when the semantic code has
  covariance `code_cov` (code_dim, code_dim)."""
  cov = np.asarray(code_cov)
  if models.labels is not None:
    part = residual_slice(models.labels)
    cov = cov[part, part]
  return heads.mu_std(params["head"], cov)


def condition(models: Models, params, z_sem, code_noise=None):
  """What the denoiser sees for semantic codes z_sem: z_sem itself, or (with
  `model.condition = "mu_s"`) the head's expand(mu_s). `code_noise` (same
  shape as mu_s) conditions on the sample mu_s + sigma_s * code_noise instead
  (training only). Every decoder (training, sampling, navigation, editing)
  goes through here, so moving z_sem moves what the denoiser sees."""
  if not models.head.condition_dim:
    return z_sem
  head = {"params": params["head"]}  # never with labels (build_models)
  mu, logvar = models.head.apply(head, z_sem)
  if code_noise is not None:
    mu = mu + jnp.exp(0.5 * logvar) * code_noise
  return models.head.apply(head, mu, method="condition")


def denoise(models: Models, params, x_t, t, z_sem, **kw):
  """eps_theta(x_t, t, condition(z_sem)) with the full parameter dict (the
  output of config.diffusion.prediction: eps, v or x0)."""
  return models.diffae.apply({"params": params["diffae"]}, x_t, t,
                             condition(models, params, z_sem), method="denoise", **kw)


def denoise_null(models: Models, params, x_t, t, **kw):
  """The denoiser under the null condition (zeros; objective.code_dropout)."""
  null = jnp.zeros((x_t.shape[0], models.code_dim), jnp.float32)
  return models.diffae.apply({"params": params["diffae"]}, x_t, t, null, method="denoise", **kw)


def _init(models: Models, rng, batch_size: int = 1):
  d = models.diffae
  x = jnp.zeros((batch_size, d.image_size, d.image_size, d.in_channels), jnp.float32)
  t = jnp.zeros((batch_size,), jnp.int32)
  k_diffae, k_vae, k_head, k_reparam, k_labels = jax.random.split(rng, 5)
  code = jnp.zeros((batch_size, models.code_dim))
  params = {
      # The UNet is built for the code's width, the encoder for z_dim.
      "diffae": d.init(k_diffae, x, x, t, code, method=_init_diffae)["params"],
      "vae": models.vae.init(k_vae, x, k_reparam)["params"],
      "head": models.head.init(k_head, head_input(models, code))["params"],
  }
  if models.labels is not None:
    params["labels"] = models.labels.init(k_labels, jnp.zeros((batch_size, d.z_dim)))["params"]
  if models.discriminator is not None:  # its own key: the other params as without it
    params["discriminator"] = models.discriminator.init(
        jax.random.fold_in(rng, 0xd15c), jnp.zeros((batch_size, models.vae.latent_dim)))["params"]
  return params


def _init_diffae(module, x0, x_t, t, code):
  return module.encode(x0), module.denoise(x_t, t, code)


_init_jitted = jax.jit(_init, static_argnums=0)


def init_params(models: Models, rng) -> dict[str, Any]:
  """All parameters, {'diffae', 'vae', 'head'}, initialised by one jitted call."""
  return _init_jitted(models, rng)


def abstract_params(models: Models) -> dict[str, Any]:
  """Shapes and dtypes of `init_params` (jax.ShapeDtypeStruct leaves), no allocation."""
  return jax.eval_shape(functools.partial(_init, models), jax.random.key(0))
