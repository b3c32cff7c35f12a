"""The latent DDIM's noise predictor: Diff-AE's `MLPSkipNet`
(phizaz/diffae `model/latentnet.py`, preset `latent_mlp_2048_norm_10layers`).

An MLP on the semantic code with the code concatenated to the input of every
layer but the first, each hidden layer scaled by (condition_bias + a
projection of the timestep embedding), then LayerNorm and SiLU:

  temb = Dense(SiLU(Dense(sinusoidal(t, 64))))          -> channels
  h    = x
  layer i < L-1:  h = SiLU(LN(Dense([h, x] if i else h) * (bias + Dense(SiLU(temb)))))
  layer L-1:      eps = Dense([h, x])                    -> channels

Names follow the official keys (`time_embed_0`, `layers_<i>/linear`,
`linear_emb`, `norm`) so that `convert.latent_from_torch` maps each leaf to one
key; the initialisation is the official one (Kaiming-normal weights in the
hidden layers, PyTorch's default elsewhere).
"""

import flax.linen as nn
import jax.numpy as jnp

from cldis_jax.models.layers import (dense, timestep_embedding, torch_bias_init,
                                     torch_kernel_init)

_kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class _Layer(nn.Module):
  """One layer: Dense, then (but in the last) scaled by the timestep,
  LayerNorm and SiLU."""
  features: int
  last: bool
  use_norm: bool
  condition_bias: float

  @nn.compact
  def __call__(self, h, temb):
    # Kaiming-normal (ReLU gain) in the SiLU layers; the last keeps PyTorch's default.
    kernel_init = torch_kernel_init if self.last else _kaiming_normal
    h = nn.Dense(self.features, kernel_init=kernel_init,
                 bias_init=torch_bias_init(h.shape[-1]), name="linear")(h)
    if self.last:
      return h
    scale = nn.Dense(self.features, kernel_init=kernel_init,
                     bias_init=torch_bias_init(temb.shape[-1]), name="linear_emb")(nn.silu(temb))
    h = h * (self.condition_bias + scale)
    if self.use_norm:
      h = nn.LayerNorm(epsilon=1e-5, name="norm")(h)
    return nn.silu(h)


class LatentNet(nn.Module):
  """(codes (B, channels), timesteps (B,)) -> predicted noise (B, channels)."""
  channels: int  # the semantic code's width (official: 512)
  hidden_channels: int = 2048
  num_layers: int = 10
  time_embed_channels: int = 64
  use_norm: bool = True
  condition_bias: float = 1.0

  @nn.compact
  def __call__(self, x, t):
    x = x.astype(jnp.float32)
    temb = timestep_embedding(t, self.time_embed_channels)
    temb = dense(temb, self.channels, name="time_embed_0", dtype=jnp.float32)
    temb = dense(nn.silu(temb), self.channels, name="time_embed_2", dtype=jnp.float32)
    h = x
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      if i:
        h = jnp.concatenate([h, x], axis=-1)
      h = _Layer(self.channels if last else self.hidden_channels, last, self.use_norm,
                 self.condition_bias, name=f"layers_{i}")(h, temb)
    return h
