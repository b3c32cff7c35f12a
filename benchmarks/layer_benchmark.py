"""One layer of the UNet, forward + backward (input and parameter gradients),
ours against the same layer written in PyTorch, in one process, at the
UNet's shapes, on one CPU device (its convolutions on Eigen, as
`python -m cldis_jax.main --cpu_devices=1`):

  python benchmarks/layer_benchmark.py --layer blocks
  python benchmarks/layer_benchmark.py --layer conv
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_convolution \
      python benchmarks/layer_benchmark.py --layer conv   # XLA's YNNPACK convolutions

`blocks`: two conditioned Diff-AE ResBlocks (GroupNorm(32), SiLU, 3x3 convs,
the time scale/shift and the semantic scale); `conv`: one 3x3 convolution;
`norm`: one GroupNorm chain (GroupNorm(32), per-sample scale and shift, SiLU:
the ResBlock's out_norm).
The PyTorch side (NCHW, `torch.set_num_threads(cores)`) does the work of
phizaz/diffae's layers; it needs `pip install torch` and is skipped without
it. A whole train step also has attention, skip concatenations, resampling,
the encoder and the optimizer; this isolates the layers that hold most of
the convolutions. Printed per shape: the median time of each over --repeats
runs after a warm-up, and torch / ours (above 1: ours faster).
"""

import os
import statistics
import sys
import time

from absl import app, flags
import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cldis_jax import parallel  # noqa: E402
from cldis_jax.models.layers import ResBlock, conv, dense, group_norm  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("shapes", ["32x32x32x32", "32x16x16x64", "8x64x64x64", "8x32x32x128",
                             "8x16x16x256"], "batch x height x width x channels, each.")
flags.DEFINE_enum("layer", "blocks", ["blocks", "conv", "norm"],
                  "Two ResBlocks, one 3x3 conv, or one GroupNorm chain.")
flags.DEFINE_integer("repeats", 7, "Timed runs after a warm-up.")

EMB, COND = 256, 512  # time-embedding and semantic-code widths fed to the blocks


class Layer(nn.Module):
  features: int
  layer: str

  @nn.compact
  def __call__(self, x, emb, cond):
    if self.layer == "conv":
      return conv(x, self.features, 3, name="conv", dtype=jnp.float32)
    if self.layer == "norm":
      scale = dense(cond, self.features, name="scale", dtype=jnp.float32)[:, None, None]
      return group_norm(x, name="norm", silu=True, mul=1 + scale, add=scale)
    for i in range(2):
      x = ResBlock(self.features, name=f"block_{i}")(x, emb, cond)
    return x


def _median_time(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def ours(n, h, c, repeats):
  model = Layer(c, FLAGS.layer)
  x = jax.random.normal(jax.random.key(0), (n, h, h, c))
  emb, cond = jnp.ones((n, EMB)), jnp.ones((n, COND))
  params = model.init(jax.random.key(1), x, emb, cond)
  params = jax.tree.map(lambda p: p + 0.01, params)  # the zero-initialised out convs
  g = jax.random.normal(jax.random.key(2), x.shape)
  loss = lambda p, x, emb, cond, g: jnp.sum(model.apply(p, x, emb, cond) * g)
  grad = jax.jit(jax.grad(loss, (0, 1)))  # every array an argument: nothing to constant-fold
  return _median_time(lambda: jax.block_until_ready(grad(params, x, emb, cond, g)), repeats)


def theirs(n, h, c, repeats):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn as tnn  # pylint: disable=g-import-not-at-top
  silu = tnn.functional.silu

  class Block(tnn.Module):

    def __init__(self):
      super().__init__()
      self.in_norm, self.out_norm = tnn.GroupNorm(32, c), tnn.GroupNorm(32, c)
      self.in_conv = tnn.Conv2d(c, c, 3, padding=1)
      self.out_conv = tnn.Conv2d(c, c, 3, padding=1)
      self.emb_proj, self.cond_proj = tnn.Linear(EMB, 2 * c), tnn.Linear(COND, c)

    def forward(self, x, emb, cond):
      h = self.in_conv(silu(self.in_norm(x)))
      scale, shift = self.emb_proj(silu(emb))[:, :, None, None].chunk(2, dim=1)
      z_scale = self.cond_proj(silu(cond))[:, :, None, None]
      h = (self.out_norm(h) * (1 + scale) + shift) * (1 + z_scale)
      return x + self.out_conv(silu(h))

  class Norm(tnn.Module):

    def __init__(self):
      super().__init__()
      self.norm, self.scale = tnn.GroupNorm(32, c), tnn.Linear(COND, c)

    def forward(self, x, emb, cond):
      del emb
      scale = self.scale(cond)[:, :, None, None]
      return silu(self.norm(x) * (1 + scale) + scale)

  torch.set_num_threads(parallel.cpu_cores())
  layers = {"blocks": lambda: [Block(), Block()], "norm": lambda: [Norm()],
            "conv": lambda: [tnn.Conv2d(c, c, 3, padding=1)]}
  modules = tnn.ModuleList(layers[FLAGS.layer]())
  x = torch.randn(n, c, h, h, requires_grad=True)
  emb, cond, g = torch.ones(n, EMB), torch.ones(n, COND), torch.randn(n, c, h, h)

  def step():
    x.grad = None
    modules.zero_grad()
    y = x
    for module in modules:
      y = module(y) if FLAGS.layer == "conv" else module(y, emb, cond)
    (y * g).sum().backward()

  return _median_time(step, repeats)


def main(argv):
  del argv
  parallel.split_cpu(1, 1)  # one device, as the comparison's PyTorch process
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    have_torch = True
  except ImportError:
    have_torch = False
    print("torch is not installed: timing ours only (pip install torch)")
  print(f"{FLAGS.layer}: jax {jax.__version__}, {jax.device_count()} x cpu, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  for shape in FLAGS.shapes:
    n, h, w, c = (int(v) for v in shape.split("x"))
    if h != w:
      raise app.UsageError(f"--shapes {shape}: height and width must be equal")
    a = ours(n, h, c, FLAGS.repeats)
    line = f"{shape:>14}  ours {a * 1e3:8.2f} ms"
    if have_torch:
      b = theirs(n, h, c, FLAGS.repeats)
      line += f"  torch {b * 1e3:8.2f} ms  torch / ours {b / a:5.2f}"
    print(line, flush=True)


if __name__ == "__main__":
  app.run(main)
