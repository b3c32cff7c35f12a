"""The conditional UNet denoiser eps_theta(x_t, t, z_sem) of Diff-AE.

phizaz/diffae `BeatGANsAutoencModel` (Preechakul et al., CVPR 2022). The
block numbering (`input_blocks_{n}_{j}`, `middle_block_{j}`, `output_blocks_{n}_{j}`)
mirrors the PyTorch module tree so that official weights convert one-to-one.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cldis_jax.models.layers import (AttentionBlock, ResBlock, Trunk, conv, dense,
                                     down_path, group_norm, timestep_embedding)


class UNet(Trunk):
  """Predicts eps from (x_t, t, z_sem). Outputs exactly zero at initialisation."""
  embed_dim: int = 512
  dropout: float = 0.1
  # In training, each skip connection of each image is zeroed with this
  # probability, so the decoder half must draw from the code and the
  # bottleneck (Skip Dropout, Jun et al., NeurIPS 2024). 0: off (Diff-AE).
  skip_dropout: float = 0.0
  # Each block also adds a shift read from the code (FiLM's scale and
  # shift) instead of scaling alone. False: Diff-AE.
  cond_shift: bool = False
  out_channels: int = 3

  @nn.compact
  def __call__(self, x, t, z_sem, *, train: bool = False):
    """x: (B, H, W, C) noisy image, t: (B,) original integer timesteps, z_sem: (B, D)."""
    if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
      raise ValueError(f"UNet built for {self.image_size}x{self.image_size} images, "
                       f"got input of shape {x.shape}")
    dt = self.dtype
    emb = timestep_embedding(t, self.base_channels)
    emb = dense(emb, self.embed_dim, name="time_embed_0", dtype=dt)
    emb = dense(nn.silu(emb), self.embed_dim, name="time_embed_2", dtype=dt)
    z = z_sem.astype(dt)

    def res(h, features, name, **kw):
      block = ResBlock(features, dropout=self.dropout, cond_shift=self.cond_shift, dtype=dt,
                       name=name, **kw)
      return block(h, emb, z, train=train)

    def attn(h, name):
      return AttentionBlock(self.num_heads, dtype=dt, name=name)(h)

    widths = [self.base_channels * m for m in self.channel_mult]
    h = conv(x.astype(dt), widths[0], 3, name="input_blocks_0_0", dtype=dt)
    skips = [h]
    for n, width, resolution, is_down in down_path(widths, self.num_res_blocks,
                                                   self.image_size):
      h = res(h, width, f"input_blocks_{n}_0", down=is_down)
      if not is_down and resolution in self.attn_resolutions:
        h = attn(h, f"input_blocks_{n}_1")
      skips.append(h)

    h = res(h, widths[-1], "middle_block_0")
    h = attn(h, "middle_block_1")
    h = res(h, widths[-1], "middle_block_2")

    resolution = self.image_size // 2 ** (len(widths) - 1)
    n = 0
    for level in reversed(range(len(widths))):
      for i in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, self._dropped(skips.pop(), train)], axis=-1)
        h = res(h, widths[level], f"output_blocks_{n}_0")
        j = 1
        if resolution in self.attn_resolutions:
          h = attn(h, f"output_blocks_{n}_{j}")
          j += 1
        if level and i == self.num_res_blocks:
          h = res(h, widths[level], f"output_blocks_{n}_{j}", up=True)
          resolution *= 2
        n += 1

    h = group_norm(h, name="out_norm", silu=True)
    eps = conv(h, self.out_channels, 3, name="out_conv", dtype=dt, zero_init=True)
    return eps.astype(jnp.float32)

  def _dropped(self, skip, train):
    """The skip tensor, zeroed per image with probability skip_dropout in training."""
    if not train or not self.skip_dropout:
      return skip
    keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.skip_dropout,
                                (skip.shape[0], 1, 1, 1))
    return skip * keep.astype(skip.dtype)
