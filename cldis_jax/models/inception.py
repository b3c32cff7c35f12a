"""The FID Inception network in Flax: the InceptionV3 of TensorFlow's
`inception-2015-12-05` graph as pytorch-fid ports it (`pt_inception-2015-12-05`),
up to the 2048-d pool3 features FID is computed on.

Structure (Szegedy et al., 2016; torchvision's module names, which the
weight files use): a stem of 3x3 convolutions and max-pools, three
InceptionA blocks (Mixed_5b-d), a grid reduction (Mixed_6a), four
InceptionC blocks with factorised 7x7 convolutions (Mixed_6b-e), another
reduction (Mixed_7a), two InceptionE blocks (Mixed_7b-c) and a global
average pool. Every convolution is bias-free, followed by batch norm (eps
1e-3, inference statistics) and ReLU. Where TensorFlow's graph differs from
the paper, so does this network, as pytorch-fid's: the average pools inside
the blocks leave the zero padding out of their mean, and Mixed_7c pools its
last branch with a max, not an average.

Inputs follow pytorch-fid: images (N, H, W, 3) in [0, 1] are resized to
299 x 299 bilinearly (half-pixel centres, no antialiasing: PyTorch's
`interpolate(..., align_corners=False)`), then mapped to [-1, 1].

Parameters are plain arrays: `<block>/<conv>/kernel` (kh, kw, in, out) and
`<block>/<conv>/{scale, bias, mean, var}` for the batch norm;
`convert.inception_from_torch` fills them from the PyTorch weights.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

SIZE = 299
BN_EPS = 1e-3


class BasicConv(nn.Module):
  """Convolution (no bias) -> batch norm (running statistics) -> ReLU."""
  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        self.kernel + (x.shape[-1], self.features))
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride),
        [(self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
    ones, zeros = nn.initializers.ones, nn.initializers.zeros
    scale = self.param("scale", ones, (self.features,))
    bias = self.param("bias", zeros, (self.features,))
    mean = self.param("mean", zeros, (self.features,))
    var = self.param("var", ones, (self.features,))
    return nn.relu((y - mean) * (scale / jnp.sqrt(var + BN_EPS)) + bias)


def _conv(features, kernel=1, stride=1, padding=0, name=None):
  k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  p = (padding, padding) if isinstance(padding, int) else tuple(padding)
  return BasicConv(features, k, stride, p, name=name)


def max_pool(x, size: int = 3, stride: int = 2, padding: int = 0):
  return nn.max_pool(x, (size, size), (stride, stride),
                     [(padding, padding), (padding, padding)])


def avg_pool_exclude_pad(x):
  """3x3, stride 1, padding 1 average that leaves the padding out of the mean."""
  total = nn.avg_pool(x, (3, 3), (1, 1), [(1, 1), (1, 1)], count_include_pad=True) * 9
  counts = nn.avg_pool(jnp.ones_like(x[:1, ..., :1]), (3, 3), (1, 1), [(1, 1), (1, 1)],
                       count_include_pad=True) * 9
  return total / counts


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv(64, name="branch1x1")(x)
    b5 = _conv(64, 5, padding=2, name="branch5x5_2")(_conv(48, name="branch5x5_1")(x))
    b3 = _conv(64, name="branch3x3dbl_1")(x)
    b3 = _conv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
    b3 = _conv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
    bp = _conv(self.pool_features, name="branch_pool")(avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv(384, 3, stride=2, name="branch3x3")(x)
    bd = _conv(64, name="branch3x3dbl_1")(x)
    bd = _conv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = _conv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, max_pool(x)], -1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    b1 = _conv(192, name="branch1x1")(x)
    b7 = _conv(c, name="branch7x7_1")(x)
    b7 = _conv(c, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = _conv(c, name="branch7x7dbl_1")(x)
    bd = _conv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = _conv(c, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = _conv(c, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = _conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = _conv(192, name="branch_pool")(avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = _conv(320, 3, stride=2, name="branch3x3_2")(_conv(192, name="branch3x3_1")(x))
    b7 = _conv(192, name="branch7x7x3_1")(x)
    b7 = _conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = _conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, max_pool(x)], -1)


class InceptionE(nn.Module):
  max_pool_branch: bool  # Mixed_7c (TensorFlow's graph): a max pool before branch_pool

  @nn.compact
  def __call__(self, x):
    b1 = _conv(320, name="branch1x1")(x)
    b3 = _conv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([_conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          _conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = _conv(448, name="branch3x3dbl_1")(x)
    bd = _conv(384, 3, padding=1, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([_conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          _conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    pooled = max_pool(x, 3, 1, 1) if self.max_pool_branch else avg_pool_exclude_pad(x)
    bp = _conv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], -1)


def resize_bilinear(x, size: int = SIZE):
  """(N, H, W, C) -> (N, size, size, C): PyTorch's bilinear interpolate with
  align_corners=False (half-pixel centres, source index clamped at 0, no
  antialiasing)."""
  def axis_weights(n_in):
    scale = n_in / size
    src = jnp.maximum((jnp.arange(size, dtype=jnp.float32) + 0.5) * scale - 0.5, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
    hi = jnp.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo
  lo, hi, w = axis_weights(x.shape[1])
  x = x[:, lo] * (1 - w)[None, :, None, None] + x[:, hi] * w[None, :, None, None]
  lo, hi, w = axis_weights(x.shape[2])
  return x[:, :, lo] * (1 - w)[None, None, :, None] + x[:, :, hi] * w[None, None, :, None]


class FIDInception(nn.Module):
  """Images (N, H, W, 3) in [0, 1] -> pool3 features (N, 2048)."""

  @nn.compact
  def __call__(self, x):
    x = 2.0 * resize_bilinear(x.astype(jnp.float32)) - 1.0
    x = _conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
    x = _conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = _conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = max_pool(x)
    x = _conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = _conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = max_pool(x)
    for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(False, name="Mixed_7b")(x)
    x = InceptionE(True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))
