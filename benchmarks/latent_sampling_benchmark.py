"""Sampling speed of the latent DDIM against the official computation, side
by side in one process, and the latent stage's share of a whole sample.

  python benchmarks/latent_sampling_benchmark.py
  python benchmarks/latent_sampling_benchmark.py --batches 8,64,256 --image_config configs/ffhq.py:64

The latent stage: `latent.sample_codes` (the official preset
`latent_mlp_2048_norm_10layers` on a 512-d code, random weights,
`--latent_steps` DDIM steps, jitted, the batch split over the CPU's devices as
`--mode=sample` does) against the same weights in the official module's
computation and `ddim_sample_loop` restated in PyTorch
(`tests/torch_reference.py`; eager, no_grad, `--threads` threads). The two
outputs are compared first, so both compute the same thing.

With `--image_config`, the image stage of `--mode=sample` for that config
(random weights, `--image_steps` steps, the first batch size) is timed too:
the latent stage's share of a whole sample, which is how far its speed can
move the sampler's.

Printed: median seconds per call (min and max over --repeats, after one
untimed call), images/s, and ours / theirs as a throughput ratio (> 1: ours
is faster).
"""

import os
import statistics
import sys
import time

from absl import app, flags
import jax
import numpy as np

from cldis_jax import config_lib, convert, diffusion, latent, models, parallel
from cldis_jax.models.latent_net import LatentNet

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))
import torch_reference  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_list("batches", ["8", "64", "256"], "Batch sizes of the latent stage.")
flags.DEFINE_integer("latent_steps", 10, "Latent DDIM steps (Diff-AE's evaluation: 10).")
flags.DEFINE_integer("image_steps", 10, "Image DDIM steps of --image_config's stage.")
flags.DEFINE_string("image_config", None, "A config path[:arg] whose image stage to time.")
flags.DEFINE_integer("repeats", 5, "Timed calls after the first.")
flags.DEFINE_integer("threads", 2, "PyTorch's intra-op threads.")
flags.DEFINE_integer("cpu_devices", 0, "CPU devices for ours (0: one per core dividing the "
                     "smallest batch, as python -m cldis_jax.main).")


def timed(fn) -> list[float]:
  fn()
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def line(name: str, batch: int, times: list[float]) -> float:
  med = statistics.median(times)
  print(f"{name:<30} batch {batch:4d}  {med:8.4f} s (min {min(times):.4f}, max "
        f"{max(times):.4f})  {batch / med:9.1f} img/s")
  return med


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top
  batches = [int(b) for b in FLAGS.batches]
  parallel.split_cpu(FLAGS.cpu_devices, min(batches))
  torch.set_num_threads(FLAGS.threads)
  mesh = parallel.data_mesh()
  put = lambda a: jax.device_put(a, parallel.replicated(mesh))
  shard = lambda a: jax.device_put(a, parallel.batch_sharding(mesh))
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")

  net = LatentNet(channels=512)  # latent_mlp_2048_norm_10layers
  params = net.init(jax.random.key(0), np.zeros((1, 512), np.float32),
                    np.zeros((1,), np.int32))["params"]
  reference = torch_reference.mlp_skip_net(torch, 512, 2048, 10, 64)
  reference.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                             for k, v in convert.latent_to_torch(params).items()})
  reference.eval()
  config = config_lib.base_config()
  proc = latent.process(config, FLAGS.latent_steps)
  abar = torch_reference.constant_alphas_cumprod(0.008, config.latent.num_timesteps)
  placed = put(params)
  ours_fn = lambda noise: latent.sample_codes(net, proc, placed, 0.0, 1.0, shard(noise))
  theirs_fn = lambda noise: torch_reference.ddim_sample(torch, reference, torch.from_numpy(noise),
                                                        abar, proc.timesteps[::-1])

  check = np.random.default_rng(0).standard_normal((8, 512)).astype(np.float32)
  want = theirs_fn(check).numpy()
  diff = np.abs(np.asarray(ours_fn(check)) - want).max() / np.abs(want).max()
  print(f"latent DDIM {FLAGS.latent_steps} steps: ours and theirs differ by at most {diff:.1e} "
        "of the codes' largest value")
  latent_s = {}
  for batch in batches:
    noise = np.random.default_rng(batch).standard_normal((batch, 512)).astype(np.float32)
    ours = line("ours: latent stage", batch,
                timed(lambda: jax.block_until_ready(ours_fn(noise))))  # pylint: disable=cell-var-from-loop
    theirs = line("official (restated): latent", batch, timed(lambda: theirs_fn(noise)))  # pylint: disable=cell-var-from-loop
    print(f"{'':<30} ours / theirs (throughput) {theirs / ours:.2f}")
    latent_s[batch] = ours

  if FLAGS.image_config:
    image_config = config_lib.load_config(FLAGS.image_config)
    batch = batches[0]
    nets = models.build_models(image_config.model)
    image_params = put(models.init_params(nets, jax.random.key(1)))
    image_proc = diffusion.process(image_config.diffusion, FLAGS.image_steps)
    m = image_config.model
    x_T = shard(np.random.default_rng(1).standard_normal(
        (batch, m.image_size, m.image_size, m.in_channels)).astype(np.float32))
    z = shard(np.random.default_rng(2).standard_normal((batch, nets.code_dim)).astype(np.float32))
    image = line(f"ours: image stage, {FLAGS.image_steps} steps", batch, timed(
        lambda: jax.block_until_ready(latent.decode_codes(nets, image_proc, image_params, z, x_T))))
    print(f"{'':<30} the latent stage is {latent_s[batch] / (latent_s[batch] + image):.2%} "
          f"of a whole sample at {FLAGS.image_config}")


if __name__ == "__main__":
  app.run(main)
