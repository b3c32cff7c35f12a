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
