"""DiffAE: the semantic encoder and the conditional UNet, as one Linen module.

Call its parts with `apply(..., method=...)`:

  z_sem = model.apply(variables, x0, method="encode")
  eps = model.apply(variables, x_t, t, z_sem, method="denoise")

`__call__(x0, x_t, t)` runs both (used for `init` and for the eps loss, in which
the encoder is trained end to end through z_sem). The parameter tree has two
children, `unet` and `encoder`, matching the official model's `encoder.*` split.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cldis_jax.models.encoder import SemanticEncoder
from cldis_jax.models.unet import UNet


class DiffAE(nn.Module):
  image_size: int
  in_channels: int = 3
  base_channels: int = 64
  channel_mult: Sequence[int] = (1, 2, 4, 8)
  enc_channel_mult: Sequence[int] = (1, 2, 4, 8, 8)
  num_res_blocks: int = 2
  enc_num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  # None: the encoder attends where the UNet does (the official setting).
  enc_attn_resolutions: Optional[Sequence[int]] = None
  # How the encoder's last feature map becomes z_sem (encoder.POOLS); "mean":
  # the official global average pool.
  enc_pool: str = "mean"
  num_heads: int = 1
  embed_dim: int = 512
  z_dim: int = 512
  dropout: float = 0.1
  skip_dropout: float = 0.0  # UNet.skip_dropout; 0: the official model
  cond_shift: bool = False  # UNet.cond_shift; False: the official model
  dtype: str = "float32"  # compute dtype; parameters stay float32

  def setup(self):
    dt = jnp.dtype(self.dtype)
    self.unet = UNet(
        image_size=self.image_size, base_channels=self.base_channels,
        channel_mult=tuple(self.channel_mult), num_res_blocks=self.num_res_blocks,
        attn_resolutions=tuple(self.attn_resolutions), num_heads=self.num_heads,
        embed_dim=self.embed_dim, dropout=self.dropout, skip_dropout=self.skip_dropout,
        cond_shift=self.cond_shift, out_channels=self.in_channels, dtype=dt)
    enc_attn = self.attn_resolutions if self.enc_attn_resolutions is None \
        else self.enc_attn_resolutions
    self.encoder = SemanticEncoder(
        image_size=self.image_size, base_channels=self.base_channels,
        channel_mult=tuple(self.enc_channel_mult),
        num_res_blocks=self.enc_num_res_blocks, attn_resolutions=tuple(enc_attn),
        num_heads=self.num_heads, z_dim=self.z_dim, pool=self.enc_pool, dtype=dt)

  def encode(self, x0):
    """Clean images (B, H, W, C) in [-1, 1] -> z_sem (B, z_dim)."""
    return self.encoder(x0)

  def denoise(self, x_t, t, z_sem, *, train: bool = False):
    """Predicted eps for x_t at original timesteps t (B,), conditioned on z_sem."""
    return self.unet(x_t, t, z_sem, train=train)

  def __call__(self, x0, x_t, t, *, train: bool = False):
    return self.denoise(x_t, t, self.encode(x0), train=train)
