"""The distillation head H: z_sem -> diagonal Gaussian N(mu_s, exp(logvar_s)) in d_v dims.

It is linear on purpose: `mu_s` is the representation every metric evaluates, and
editing along an axis of `mu_s` maps back to z_sem through the head's
pseudo-inverse (`DESIGN.md` section 2), which needs a linear map.
"""

import flax.linen as nn
import jax.numpy as jnp

from cldis_jax.models.layers import dense


class DistillHead(nn.Module):
  latent_dim: int

  @nn.compact
  def __call__(self, z_sem):
    """z_sem (B, D) -> (mu_s, logvar_s), each (B, latent_dim), float32."""
    out = dense(z_sem.astype(jnp.float32), 2 * self.latent_dim, name="proj",
                dtype=jnp.float32)
    mu, logvar = jnp.split(out, 2, axis=-1)
    return mu, logvar


def mu_directions(head_params) -> jnp.ndarray:
  """(latent_dim, z_dim): row j is the smallest change of z_sem that moves mu_s
  by +1 along axis j and leaves the other axes of mu_s where they were (rows of
  the pseudo-inverse of the mu part of the linear head)."""
  kernel = head_params["proj"]["kernel"]
  w_mu = kernel[:, :kernel.shape[1] // 2]  # (z_dim, latent_dim): mu_s = z_sem @ w_mu + b
  return jnp.linalg.pinv(w_mu).astype(jnp.float32)
