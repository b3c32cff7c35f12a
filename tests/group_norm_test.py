"""The fused GroupNorm (+ per-sample scale/shift, + SiLU) and its hand-written
gradient equal the plain chain that JAX differentiates itself."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax.models import group_norm


def _plain(params, x, mul, add, silu, groups):
  """nn.GroupNorm, then * mul + add, then SiLU: what the fused op replaces."""
  y = nn.GroupNorm(num_groups=groups).apply(params, x)
  y = y * mul + add if mul is not None else y
  return nn.silu(y) if silu else y


@pytest.mark.parametrize("silu,modulated,shape", [
    (False, False, (2, 8, 8, 64)), (True, False, (3, 4, 4, 48)),
    (True, True, (2, 8, 8, 64)), (False, True, (2, 16, 32))])
def test_fused_norm_and_its_gradient_match_the_plain_chain(silu, modulated, shape):
  keys = jax.random.split(jax.random.key(0), 6)
  x = jax.random.normal(keys[0], shape) * 2 + 3
  groups = 16 if shape[-1] % 32 else 32
  c, b = shape[-1], shape[0]
  params = {"params": {"scale": 1 + jax.random.normal(keys[1], (c,)),
                       "bias": jax.random.normal(keys[2], (c,))}}
  per_sample = (b,) + (1,) * (len(shape) - 2) + (c,)
  mul = 1 + 0.5 * jax.random.normal(keys[3], per_sample) if modulated else None
  add = jax.random.normal(keys[4], per_sample) if modulated else None
  fused = group_norm.StableGroupNorm(num_groups=groups, silu=silu)
  weights = jax.random.normal(keys[5], shape)
  loss = lambda f: lambda p, x, m, a: jnp.sum(weights * jnp.sin(f(p, x, m, a)))
  ours = lambda p, x, m, a: fused.apply(p, x, m, a)
  plain = lambda p, x, m, a: _plain(p, x, m, a, silu, groups)
  np.testing.assert_allclose(ours(params, x, mul, add), plain(params, x, mul, add),
                             atol=2e-5, rtol=1e-5)
  argnums = (0, 1, 2, 3) if modulated else (0, 1)
  got = jax.grad(loss(ours), argnums)(params, x, mul, add)
  want = jax.grad(loss(plain), argnums)(params, x, mul, add)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=2e-4, rtol=1e-4)

