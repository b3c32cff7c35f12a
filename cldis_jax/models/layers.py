"""Building blocks of the Diff-AE UNet and semantic encoder.

Follows phizaz/diffae `model/blocks.py` and `model/nn.py`. Names of
submodules are chosen so that the converter in `cldis_jax.convert` can map
every PyTorch key onto one Flax leaf:

  ResBlock:  in_norm, in_conv, emb_proj, cond_proj, out_norm, out_conv, skip
             (torch: in_layers.0, in_layers.2, emb_layers.1, cond_emb_layers.1,
             out_layers.0, out_layers.3, skip_connection)
  Attention: norm, qkv, proj_out (same names as torch)

Images are NHWC. Parameters are float32; `dtype` is the compute dtype.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cldis_jax import errors
from cldis_jax.models.group_norm import StableGroupNorm

Dtype = Any

# PyTorch's default init for Conv and Linear: kaiming_uniform(a=sqrt(5)) on the
# weight, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(x, features, kernel_size, *, name, dtype, zero_init=False):
  """A stride-1 'SAME' conv with PyTorch's default (or zero) initialisation."""
  fan_in = x.shape[-1] * kernel_size * kernel_size
  return nn.Conv(
      features, (kernel_size, kernel_size), padding="SAME", dtype=dtype,
      kernel_init=nn.initializers.zeros if zero_init else torch_kernel_init,
      bias_init=nn.initializers.zeros if zero_init else torch_bias_init(fan_in),
      name=name)(x)


def dense(x, features, *, name, dtype, zero_init=False):
  """nn.Dense with PyTorch's default (or zero) initialisation."""
  return nn.Dense(
      features, dtype=dtype,
      kernel_init=nn.initializers.zeros if zero_init else torch_kernel_init,
      bias_init=nn.initializers.zeros if zero_init else torch_bias_init(x.shape[-1]),
      name=name)(x)


def group_norm(x, *, name, silu=False, mul=None, add=None):
  """GroupNorm(32 groups, eps 1e-5), then `* mul + add` (per sample and
  channel) and SiLU if asked, computed in float32 and cast back.

  The official GroupNorm32 needs C divisible by 32; small CPU models (e.g. the
  48 channels of a 16 + 32 skip concatenation) use gcd(32, C) groups, which is
  32 wherever the official model is defined.
  """
  c = x.shape[-1]
  f32 = lambda v: None if v is None else v.astype(jnp.float32)
  y = StableGroupNorm(num_groups=math.gcd(32, c), silu=silu, name=name)(
      x.astype(jnp.float32), f32(mul), f32(add))
  return y.astype(x.dtype)


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding of (unscaled) timesteps, **cos first** as in Diff-AE."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class Trunk(nn.Module):
  """The hyperparameters the UNet and the semantic encoder share: the
  resolution, the width per level, blocks per level, where attention runs."""
  image_size: int
  base_channels: int
  channel_mult: Sequence[int]
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  num_heads: int = 1
  dtype: Dtype = jnp.float32


def down_path(widths, num_res_blocks, image_size):
  """The encoder-side block plan shared by the UNet and the semantic encoder.

  Yields (block_index, width, resolution, is_down) for `input_blocks_1...`:
  `num_res_blocks` blocks per level, then a downsampling ResBlock except at the
  last level. `resolution` is the one the block outputs.
  """
  n, resolution = 1, image_size
  for level, width in enumerate(widths):
    for _ in range(num_res_blocks):
      yield n, width, resolution, False
      n += 1
    if level != len(widths) - 1:
      resolution //= 2
      yield n, width, resolution, True
      n += 1


def upsample_nearest(x):
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool(x):
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ResBlock(nn.Module):
  """Diff-AE ResBlock.

  With `use_condition` (every UNet block): time scale+shift, then semantic scale
  (with `cond_shift`, semantic scale+shift), zero-initialised output conv.
  Without it (every encoder block): a single GN -> SiLU -> conv branch plus the
  skip, and no other layers.
  Resampling (`up` nearest x2 / `down` avg-pool 2) is applied to both branches
  between the first norm-activation and the first conv.
  """
  features: int
  use_condition: bool = True
  up: bool = False
  down: bool = False
  dropout: float = 0.0
  cond_shift: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb=None, cond=None, *, train: bool = False):
    h = group_norm(x, name="in_norm", silu=True)
    if self.up:
      h, x = upsample_nearest(h), upsample_nearest(x)
    if self.down:
      h, x = avg_pool(h), avg_pool(x)
    h = conv(h, self.features, 3, name="in_conv", dtype=self.dtype)

    if self.use_condition:
      t = dense(nn.silu(emb), 2 * self.features, name="emb_proj", dtype=self.dtype)
      t_scale, t_shift = jnp.split(t[:, None, None, :], 2, axis=-1)
      z = dense(nn.silu(cond), (1 + self.cond_shift) * self.features, name="cond_proj",
                dtype=self.dtype)[:, None, None, :]
      z_scale, z_shift = jnp.split(z, 2, axis=-1) if self.cond_shift else (z, None)
      # GN(h) * (1 + t_scale) + t_shift, then * (1 + z_scale) [+ z_shift], then
      # SiLU, in one op
      z_mul = 1 + z_scale
      add = t_shift * z_mul if z_shift is None else t_shift * z_mul + z_shift
      h = group_norm(h, name="out_norm", silu=True, mul=(1 + t_scale) * z_mul, add=add)
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
      h = conv(h, self.features, 3, name="out_conv", dtype=self.dtype, zero_init=True)

    if x.shape[-1] != self.features:
      x = conv(x, self.features, 1, name="skip", dtype=self.dtype)
    return x + h


class AttentionBlock(nn.Module):
  """Self-attention over all positions, with the 'legacy' QKV head split.

  The 1/sqrt(C_head) scaling is split as C_head^-1/4 on q and on k, the softmax
  runs in float32, and `proj_out` is zero-initialised, as in Diff-AE.
  """
  num_heads: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hh, ww, c = x.shape
    if c % self.num_heads:
      raise errors.ConfigError(
          f"attention width {c} is not divisible by num_heads={self.num_heads}")
    ch = c // self.num_heads
    h = group_norm(x, name="norm").reshape(b, hh * ww, c)
    qkv = dense(h, 3 * c, name="qkv", dtype=self.dtype)
    # Legacy order: channels are grouped per head first, then q | k | v.
    q, k, v = jnp.split(qkv.reshape(b, hh * ww, self.num_heads, 3 * ch), 3, axis=-1)
    scale = ch ** -0.25
    logits = jnp.einsum("bthc,bshc->bhts", q * scale, k * scale)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    a = jnp.einsum("bhts,bshc->bthc", weights, v).reshape(b, hh * ww, c)
    out = dense(a, c, name="proj_out", dtype=self.dtype, zero_init=True)
    return x + out.reshape(b, hh, ww, c)
