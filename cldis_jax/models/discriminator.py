"""FactorVAE's discriminator (Kim & Mnih 2018, appendix A): an MLP on a latent
code that tells a code of q(z) (class 0) from one whose dims were shuffled
independently across the batch (class 1). disentanglement_lib's
`fc_discriminator`: `num_layers` dense layers of `units` with leaky ReLU of
slope 0.2 (TensorFlow's default), then 2 logits, initialised like
TensorFlow's dense layers (Glorot-uniform kernels, zero biases)."""

import flax.linen as nn
import jax.numpy as jnp


class Discriminator(nn.Module):
  num_layers: int = 6
  units: int = 1000

  @nn.compact
  def __call__(self, z):
    """Codes (B, d) -> logits (B, 2)."""
    dense = lambda n, name: nn.Dense(n, kernel_init=nn.initializers.xavier_uniform(),
                                     name=name)
    h = z.astype(jnp.float32)
    for i in range(self.num_layers):
      h = nn.leaky_relu(dense(self.units, f"fc_{i}")(h), negative_slope=0.2)
    return dense(2, "logits")(h)
