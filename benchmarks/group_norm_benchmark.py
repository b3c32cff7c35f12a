"""The GroupNorm chain's cost: the closed-loop train step (the one
`python -m cldis_jax.main` runs) with `layers.StableGroupNorm` (shifted two-pass
variance, fused with the scale/shift and SiLU that follow it, closed-form
gradient: the default) and with the plain chain used before 2026-12-01
(flax's one-pass `nn.GroupNorm`, E[x^2] - E[x]^2, then the scale/shift and
SiLU, differentiated by JAX), compiled side by side and timed in alternating
rounds so that both see the same machine load.

  python benchmarks/group_norm_benchmark.py --config configs/quickstart.py
  python benchmarks/group_norm_benchmark.py --config configs/ffhq.py:64 --batch 8 \
      --config.model.dtype=float32 --rounds 3 --steps 2

Prints the median step time of each (with min and max over rounds) and the
ratio stable / one-pass, with the spread of the per-round ratios.
"""

import statistics
import time

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from cldis_jax import models, parallel, train_step
from cldis_jax.models import group_norm, layers

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Config file (path[:arg]).")
flags.DEFINE_integer("batch", None, "Global batch size; default: the config's.")
flags.DEFINE_integer("rounds", 5, "Alternating rounds (each times both variants).")
flags.DEFINE_integer("steps", 5, "Steps per variant per round.")


class OnePassChain(nn.Module):
  """GroupNorm as flax computes it (var = E[x^2] - E[x]^2), then `* mul + add`
  and SiLU, each its own op, differentiated by JAX; the same parameters."""
  num_groups: int
  silu: bool = False

  @nn.compact
  def __call__(self, x, mul=None, add=None):
    a, b = group_norm.affine(self, x, mul, add)
    xg = x.reshape(x.shape[0], -1, self.num_groups, x.shape[-1] // self.num_groups)
    mean = xg.mean((1, 3), keepdims=True)
    var = jnp.maximum((xg * xg).mean((1, 3), keepdims=True) - mean * mean, 0.0)
    y = ((xg - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(x.shape) * a + b
    return nn.silu(y) if self.silu else y


def compiled_step(config, norm):
  """(jitted step on the mesh, its initial state, batch) with `norm` as GroupNorm."""
  layers.StableGroupNorm, saved = norm, layers.StableGroupNorm
  try:
    nets = models.build_models(config.model)
    mesh = parallel.data_mesh()
    state = train_step.init_state_on_mesh(config, nets, jax.random.key(0), mesh)
    step = train_step.make_train_step(config, nets, mesh)
    size, channels = config.model.image_size, config.model.in_channels
    x0 = jax.device_put(jax.random.uniform(jax.random.key(1), (config.train.batch_size, size,
                                                               size, channels), minval=-1),
                        parallel.batch_sharding(mesh))
    x0 = {"image": x0}  # the train step's batch
    rng = jax.device_put(jax.random.key(4), parallel.replicated(mesh))
    fn = jax.jit(lambda s, x, r: step(s, x, r)[0], donate_argnums=0)
    fn = fn.lower(state, x0, rng).compile()  # traced while `norm` is in place
  finally:
    layers.StableGroupNorm = saved
  return fn, state, x0, rng


def main(argv):
  del argv
  config = FLAGS.config
  config.train.batch_size = FLAGS.batch or config.train.batch_size
  print(f"{config_flags.get_config_filename(FLAGS['config'])}  batch {config.train.batch_size}  "
        f"{config.model.image_size} px  dtype {config.model.dtype}  "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}")
  variants = {"stable": layers.StableGroupNorm, "one-pass": OnePassChain}
  runs = {name: list(compiled_step(config, norm)) for name, norm in variants.items()}
  for run in runs.values():  # warm up
    run[1] = jax.block_until_ready(run[0](*run[1:]))
  times = {name: [] for name in runs}
  for _ in range(FLAGS.rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      for _ in range(FLAGS.steps):
        run[1] = run[0](*run[1:])
      jax.block_until_ready(run[1])
      times[name].append((time.perf_counter() - start) / FLAGS.steps)
  for name, t in times.items():
    print(f"{name:<9} step {statistics.median(t):.4f} s (min {min(t):.4f}, max {max(t):.4f}, "
          f"{FLAGS.rounds} rounds of {FLAGS.steps})")
  ratios = [a / b for a, b in zip(times["stable"], times["one-pass"])]
  print(f"stable / one-pass: {statistics.median(ratios):.3f} "
        f"(rounds: {min(ratios):.3f} .. {max(ratios):.3f})")


if __name__ == "__main__":
  app.run(main)
