"""The navigation networks (Voynov & Babenko 2020; docs/navigation.md): K
learned directions in z_sem space and the reconstructor that tells, from an
image pair, which direction was moved and by how much.

- `Directions()(basis)` -> (K, z_dim), one direction per row, expressed in
  an orthonormal `basis` (rows; z_sem's principal axes, or the identity):
  - "unit": a free matrix with each row divided by its norm (Voynov's "proj"
    deformator, the paper's unit-norm variant);
  - "ortho": the first K rows of expm(S - S^T), an orthogonal z_dim x z_dim
    matrix, so the rows are orthonormal (Voynov's "ortho"; K <= z_dim).
  `start="pca"` starts at the first K basis vectors (the matrix near the
  identity, S near 0: Voynov's non-random init); `start="random"` starts
  anywhere (N(0, 1) entries, Voynov's random init).
- `Reconstructor()(x_a, x_b)` -> (K logits, predicted shift): a ResNet with
  BasicBlocks ([2, 2, 2, 2] at width 64 is ResNet-18) whose first conv sees the
  two images concatenated (6 channels for RGB). Differences from torchvision:
  GroupNorm instead of BatchNorm (no running statistics, so training and
  evaluation compute the same function; at least 16 channels per group), and
  the "small" stem (3x3 stride 1, no max-pool) for images of 64 px and below,
  where the ImageNet stem would throw away three quarters of the pixels at
  once.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cldis_jax import errors

PARAMETERIZATIONS = ("unit", "ortho")
INITS = ("pca", "random")
STEMS = ("imagenet", "small")
INPUTS = ("pair", "pair_and_difference")


class Directions(nn.Module):
  num_directions: int
  z_dim: int
  parameterization: str = "unit"
  start: str = "pca"  # the initialisation (not `init`: that is Module.init)

  @nn.compact
  def __call__(self, basis) -> jnp.ndarray:
    k, d = self.num_directions, self.z_dim
    if self.start not in INITS:
      raise errors.ConfigError(f"navigate.init {self.start!r} is not one of {INITS}")
    random = self.start == "random"
    if self.parameterization == "unit":
      def near_identity(key, shape):
        return jnp.eye(*shape) + 1e-3 * jax.random.normal(key, shape)
      w = self.param("matrix", nn.initializers.normal(1.0) if random else near_identity, (k, d))
      return (w / jnp.linalg.norm(w, axis=-1, keepdims=True)) @ basis
    if self.parameterization == "ortho":
      if k > d:
        raise errors.ConfigError(f"navigate.num_directions={k} exceeds z_dim={d}: orthonormal "
                                 "directions need K <= z_dim (or use parameterization='unit')")
      s = self.param("skew", nn.initializers.normal(1.0 if random else 1e-3), (d, d))
      return jax.scipy.linalg.expm(s - s.T)[:k] @ basis
    raise errors.ConfigError(f"navigate.parameterization {self.parameterization!r} is not one of "
                             f"{PARAMETERIZATIONS}")


def group_norm(features: int, name: str) -> nn.GroupNorm:
  """32 groups, or 16 channels per group in narrow layers. (One channel per
  group would be instance normalisation, which erases exactly the uniform
  colour changes many edits make.)"""
  return nn.GroupNorm(num_groups=max(1, min(32, features // 16)), name=name)


class BasicBlock(nn.Module):
  features: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    norm = lambda name: group_norm(self.features, name)
    y = nn.Conv(self.features, (3, 3), (self.stride, self.stride), padding=1,
                use_bias=False, name="conv1")(x)
    y = nn.relu(norm("norm1")(y))
    y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False, name="conv2")(y)
    y = norm("norm2")(y)
    if x.shape[-1] != self.features or self.stride != 1:
      x = nn.Conv(self.features, (1, 1), (self.stride, self.stride), use_bias=False,
                  name="proj")(x)
      x = norm("proj_norm")(x)
    return nn.relu(x + y)


class Reconstructor(nn.Module):
  num_directions: int
  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stem: str = "small"
  inputs: str = "pair"

  @nn.compact
  def __call__(self, x_a, x_b):
    """Image pairs (B, H, W, C) each -> (logits (B, K), shift (B,)), float32."""
    if self.inputs not in INPUTS:
      raise errors.ConfigError(
          f"navigate.reconstructor.inputs {self.inputs!r} is not one of {INPUTS}")
    parts = [x_a, x_b] + ([x_b - x_a] if self.inputs == "pair_and_difference" else [])
    x = jnp.concatenate(parts, axis=-1).astype(jnp.float32)
    if self.stem == "imagenet":
      x = nn.Conv(self.width, (7, 7), (2, 2), padding=3, use_bias=False, name="stem")(x)
      x = nn.relu(group_norm(self.width, "stem_norm")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "small":
      x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, name="stem")(x)
      x = nn.relu(group_norm(self.width, "stem_norm")(x))
    else:
      raise errors.ConfigError(f"navigate.reconstructor.stem {self.stem!r} is not one of {STEMS}")
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2 ** i, stride, name=f"stage{i}_block{j}")(x)
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_directions, name="logits")(x)
    shift = nn.Dense(1, name="shift")(x)[:, 0]
    return logits, shift
