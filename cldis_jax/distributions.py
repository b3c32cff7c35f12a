"""Closed-form Gaussian KLs, reparametrised sampling and the VAE likelihoods.

All reductions are per sample: functions return shape (B,) (summed over every
non-batch axis), leaving the batch mean to the objective.
"""

import jax
import jax.numpy as jnp
import optax

from cldis_jax import errors

LIKELIHOODS = ("bernoulli", "gaussian")


def _sum_per_sample(x):
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p):
  """KL( N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p) ), summed over dims."""
  kl = 0.5 * (logvar_p - logvar_q
              + (jnp.exp(logvar_q) + jnp.square(mu_q - mu_p)) * jnp.exp(-logvar_p) - 1.0)
  return _sum_per_sample(kl)


def kl_standard_normal(mu, logvar):
  """KL( N(mu, e^logvar) || N(0, I) ), summed over dims."""
  return _sum_per_sample(0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar))


def sample_diag_gaussian(rng, mu, logvar):
  """mu + sigma * eps with eps ~ N(0, I) drawn from `rng`."""
  return mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape, mu.dtype)


def to_unit_interval(x):
  """Images in [-1, 1] -> [0, 1], the targets of both likelihoods."""
  return (x + 1.0) / 2.0


def reconstruction_nll(logits, x, likelihood: str):
  """Per-sample reconstruction loss of images x in [-1, 1] under decoder `logits`.

  'bernoulli': sigmoid cross-entropy summed over pixels (disentanglement_lib's
  `bernoulli_loss`). 'gaussian': squared error of sigmoid(logits) summed over
  pixels (disentanglement_lib's `l2_loss` with a logits activation), i.e. a
  fixed-variance Gaussian up to scale and constant.
  """
  target = to_unit_interval(x.astype(jnp.float32))
  logits = logits.astype(jnp.float32)
  if likelihood == "bernoulli":
    return _sum_per_sample(optax.sigmoid_binary_cross_entropy(logits, target))
  if likelihood == "gaussian":
    return _sum_per_sample(jnp.square(jax.nn.sigmoid(logits) - target))
  raise errors.ConfigError(f"unknown likelihood {likelihood!r}; valid: {LIKELIHOODS}")
