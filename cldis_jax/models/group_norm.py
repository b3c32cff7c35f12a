"""GroupNorm fused with what follows it in Diff-AE: a per-sample scale and
shift (the time and semantic conditioning) and SiLU, with a hand-written
gradient.

    out = act(xhat * a + b),  xhat = GroupNorm(x) without its affine,
    a = scale * mul,  b = bias * mul + add   (mul, add: (B, 1, .., 1, C) or None)

Differentiated by JAX, this chain becomes dozens of small reductions and
elementwise passes per layer (37% of the operation time of the
quickstart-sized step on a CPU, about as much as the convolutions;
docs/benchmarks.md). The closed-form gradient needs two group
reductions and one elementwise pass:

    g_y  = g * act'(y)
    da   = sum(g_y * xhat),  db = sum(g_y)   (over what a and b broadcast over)
    dx   = rstd * (g_y a - mean(g_y a) - xhat * mean(g_y a * xhat))  (group means)

The variance is E[(x - mean)^2] of the data shifted by one of its own values
per group (not E[x^2] - E[x]^2, which loses digits as a group's mean grows
against its std); the shift cancels in the output. Computed in float32.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def _flat(x):
  return x.reshape(x.shape[0], -1, x.shape[-1])


def _per_group(v, groups, reduce):
  """(B, 1, C) per-channel values -> one value per group (`reduce`: "sum" or
  "first" of its channels), repeated on every channel of the group.

  A product with a 0/1 matrix (exact): XLA computes it once, where the same
  regrouping written with reshapes is fused into, and its index arithmetic
  repeated for, every element of the big passes that use it.
  """
  c = v.shape[-1]
  group = jnp.arange(c) // (c // groups)
  source = group[:, None] == group[None, :]
  if reduce == "first":
    source &= (jnp.arange(c) % (c // groups) == 0)[:, None]
  return jnp.einsum("bsc,cd->bsd", v, source.astype(v.dtype),
                    precision=jax.lax.Precision.HIGHEST)


def _statistics(x, groups, eps):
  """(shift, mean, rstd), each (B, 1, C), for x as (B, positions, C):
  xhat = ((x - shift) - mean) * rstd, shift being one value of each group."""
  count = x.shape[1] * (x.shape[2] // groups)
  shift = _per_group(jax.lax.stop_gradient(x[:, :1, :]), groups, "first")
  mean = _per_group((x - shift).sum(1, keepdims=True), groups, "sum") / count
  var = _per_group(jnp.square((x - shift) - mean).sum(1, keepdims=True), groups, "sum") / count
  return shift, mean, jax.lax.rsqrt(var + eps)


def _activate(y, silu):
  return y * jax.nn.sigmoid(y) if silu else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def norm_affine_act(x, a, b, groups: int, eps: float, silu: bool):
  """act(GroupNorm(x) * a + b); x float32 (B, ..., C), a and b broadcast to x
  with the channel last."""
  return _forward(x, a, b, groups, eps, silu)[0]


def _centred_and_affine(x, shift, mean, rstd, a, b):
  """(x - shift) - mean, a per sample, and y = that * rstd * a + b; (B, S, C)."""
  a_s = _flat(jnp.broadcast_to(a, x.shape[:1] + a.shape[1:]))
  d = (_flat(x) - shift) - mean
  return d, a_s, d * (rstd * a_s) + _flat(b)


def _forward(x, a, b, groups, eps, silu):
  shift, mean, rstd = _statistics(_flat(x), groups, eps)
  _, _, y = _centred_and_affine(x, shift, mean, rstd, a, b)
  return _activate(y, silu).reshape(x.shape), (x, shift, mean, rstd, a, b)


def _sum_to(v, shape):
  """(B, 1, C) per-sample sums -> summed over the axes that `shape` broadcasts."""
  if shape[0] == 1:
    v = v.sum(0, keepdims=True)
  return v.reshape(shape)


def _backward(groups, eps, silu, residuals, g):
  del eps
  x, shift, mean, rstd, a, b = residuals
  d, a_s, y = _centred_and_affine(x, shift, mean, rstd, a, b)
  g = _flat(g)
  if silu:
    s = jax.nn.sigmoid(y)
    g = g * s * (1 + y * (1 - s))
  sum_g, sum_gd = g.sum(1, keepdims=True), (g * d).sum(1, keepdims=True)
  count = d.shape[1] * (d.shape[2] // groups)
  m1 = _per_group(sum_g * a_s, groups, "sum") / count
  m2 = _per_group(sum_gd * rstd * a_s, groups, "sum") / count
  d_coef, const = rstd * rstd * m2, rstd * m1
  dx = g * (rstd * a_s) - d * d_coef - const
  return dx.reshape(x.shape), _sum_to(sum_gd * rstd, a.shape), _sum_to(sum_g, b.shape)


norm_affine_act.defvjp(_forward, _backward)


class StableGroupNorm(nn.Module):
  """GroupNorm over (H, W, C // G) per group with learned scale and bias
  (nn.GroupNorm's parameter names), then `* mul + add` and SiLU if asked, in
  float32."""
  num_groups: int
  epsilon: float = 1e-5
  silu: bool = False

  @nn.compact
  def __call__(self, x, mul=None, add=None):
    a, b = affine(self, x, mul, add)
    return norm_affine_act(x, a, b, self.num_groups, self.epsilon, self.silu)


def affine(module: nn.Module, x, mul=None, add=None):
  """(a, b) of `* a + b` after the normalisation: the module's GroupNorm
  `scale` and `bias` (created here), times `mul`, plus `add`."""
  c = x.shape[-1]
  scale = module.param("scale", nn.initializers.ones, (c,), jnp.float32)
  bias = module.param("bias", nn.initializers.zeros, (c,), jnp.float32)
  a = scale.reshape((1,) * (x.ndim - 1) + (c,))
  b = bias.reshape(a.shape)
  if mul is not None:
    a, b = a * mul, b * mul
  return a, (b + add if add is not None else b)
