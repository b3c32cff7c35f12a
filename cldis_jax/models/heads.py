"""The distillation head H: z_sem -> diagonal Gaussian N(mu_s, exp(logvar_s)) in d_v dims.

It is linear on purpose: `mu_s` is the representation every metric evaluates, and
editing along an axis of `mu_s` maps back to z_sem through the head's
pseudo-inverse (docs/method.md), which needs a linear map.

With `condition_dim > 0` the head also owns `expand`, a linear map from a d_v
code back to `condition_dim` (the UNet's conditioning width): the denoiser is
then conditioned on `expand(mu_s)` instead of z_sem (`model.condition =
"mu_s"`), so the diffusion loss has to pass through the distilled code.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cldis_jax.models.layers import torch_bias_init, torch_kernel_init


HEAD_INITS = ("random", "prior")


def _dense(features: int, fan_in: int, init: str = "random") -> nn.Dense:
  if init == "prior":
    return nn.Dense(features, dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                    bias_init=nn.initializers.zeros)
  return nn.Dense(features, dtype=jnp.float32, kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(fan_in))


class DistillHead(nn.Module):
  latent_dim: int
  z_dim: int
  condition_dim: int = 0  # > 0: the denoiser is conditioned on expand(mu_s)
  start: str = "random"  # "prior": proj starts at zero, the student at N(0, I)

  def setup(self):
    self.proj = _dense(2 * self.latent_dim, self.z_dim, self.start)
    if self.condition_dim:
      self.expand = _dense(self.condition_dim, self.latent_dim)

  def __call__(self, z_sem):
    """z_sem (B, D) -> (mu_s, logvar_s), each (B, latent_dim), float32."""
    mu, logvar = jnp.split(self.proj(z_sem.astype(jnp.float32)), 2, axis=-1)
    if self.condition_dim and self.is_initializing():
      self.expand(mu)  # create `expand` in the same init call
    return mu, logvar

  def condition(self, code):
    """A d_v code (mu_s, or a sample around it) -> the denoiser's condition."""
    return self.expand(code.astype(jnp.float32))


def mu_kernel(head_params):
  """(z_dim, latent_dim): the mu part of the linear head, mu_s = z_sem @ W + b."""
  kernel = head_params["proj"]["kernel"]
  return kernel[:, :kernel.shape[1] // 2]


def mu_directions(head_params) -> jnp.ndarray:
  """(latent_dim, z_dim): row j is the smallest change of z_sem that moves mu_s
  by +1 along axis j and leaves the other axes of mu_s where they were (rows of
  the pseudo-inverse of the mu part of the linear head)."""
  return jnp.linalg.pinv(mu_kernel(head_params)).astype(jnp.float32)


def mu_std(head_params, z_cov) -> np.ndarray:
  """(latent_dim,) float32: the std of each axis of mu_s when z_sem has
  covariance `z_cov` (z_dim, z_dim)."""
  w_mu = np.asarray(mu_kernel(head_params), np.float64)
  return np.sqrt(np.einsum("dk,de,ek->k", w_mu, np.asarray(z_cov, np.float64),
                           w_mu)).astype(np.float32)
