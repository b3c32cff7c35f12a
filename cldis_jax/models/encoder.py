"""The Diff-AE semantic encoder E_phi(x0) -> z_sem.

phizaz/diffae `BeatGANsEncoderModel` (Preechakul et al., CVPR 2022): the
UNet's encoder half with one extra level, unconditioned single-conv ResBlocks,
then GN -> SiLU -> global average pool -> 1x1 conv. Deterministic, unnormalised.

`pool="flatten"` (ours, not the official model) reads the last feature map
whole instead of its average: GN -> SiLU -> flatten -> dense, so that where
things are in the image reaches the code without a feature having to learn it.
"""

import flax.linen as nn
import jax.numpy as jnp

from cldis_jax.models.layers import (AttentionBlock, ResBlock, Trunk, conv, dense, down_path,
                                     group_norm)


POOLS = ("mean", "flatten")


class SemanticEncoder(Trunk):
  z_dim: int = 512
  pool: str = "mean"  # one of POOLS (module docstring)

  @nn.compact
  def __call__(self, x0):
    """x0: (B, H, W, C) clean image in [-1, 1] -> z_sem (B, z_dim) float32."""
    if x0.shape[1] != self.image_size or x0.shape[2] != self.image_size:
      raise ValueError(f"SemanticEncoder built for {self.image_size}x{self.image_size} "
                       f"images, got input of shape {x0.shape}")
    dt = self.dtype

    def res(h, features, name, **kw):
      return ResBlock(features, use_condition=False, dtype=dt, name=name, **kw)(h)

    def attn(h, name):
      return AttentionBlock(self.num_heads, dtype=dt, name=name)(h)

    widths = [self.base_channels * m for m in self.channel_mult]
    h = conv(x0.astype(dt), widths[0], 3, name="input_blocks_0_0", dtype=dt)
    for n, width, resolution, is_down in down_path(widths, self.num_res_blocks,
                                                   self.image_size):
      h = res(h, width, f"input_blocks_{n}_0", down=is_down)
      if not is_down and resolution in self.attn_resolutions:
        h = attn(h, f"input_blocks_{n}_1")

    h = res(h, widths[-1], "middle_block_0")
    h = attn(h, "middle_block_1")
    h = res(h, widths[-1], "middle_block_2")

    h = group_norm(h, name="out_norm", silu=True)
    if self.pool == "flatten":
      z = dense(h.reshape(h.shape[0], -1), self.z_dim, name="out_dense", dtype=dt)
    else:
      h = jnp.mean(h, axis=(1, 2), keepdims=True)
      z = conv(h, self.z_dim, 1, name="out_conv", dtype=dt)
    return z.reshape(z.shape[0], self.z_dim).astype(jnp.float32)
