"""Times the whole closed-loop train step (cldis_jax.train_step: both branches,
distillation, controller, Adam, EMA), one jitted step of the Diff-AE alone
(encoder + UNet, eps loss) and of the beta-VAE alone, and DDIM sampling, for a
config and batch size.

  python benchmarks/step_benchmark.py --config configs/test.py --batch 4
  python benchmarks/step_benchmark.py --config configs/quickstart.py --parts cldis
  python benchmarks/step_benchmark.py --config configs/shapes3d_subspaces.py --parts cldis
  python benchmarks/step_benchmark.py --config configs/ffhq.py:64 --batch 8 \
      --config.model.dtype=float32

Any config field can be overridden the same way (--config.model.diffae.dropout=0.0).

`navigate` is the navigation step (`cldis_jax.navigation`, batch
`navigate.batch_size` unless --batch): the image pair decoded by
`navigate.decode_steps` DDIM steps, the reconstructor, the gradient into the
directions and the reconstructor, Adam; on one device (as --mode=navigate).

The `diffae` part is forward + backward + Adam (with global-norm clipping), the
work the official PyTorch training step does (docs/benchmarks.md); `cldis`
is the step `python -m cldis_jax.main` runs. Printed per part:
compile time, median step time over --repeats runs after compilation (with min
and max, to show the noise), images/s, XLA's flop count of the compiled step
and the achieved FLOP/s, and peak memory (device peak on accelerators; process
peak RSS on CPU).

The batch is sharded over every local device (a 1-D `data` mesh) with the
parameters replicated, as in training. On a CPU-only machine the CPU is split
into one device per core, as `python -m cldis_jax.main` does (`--cpu_devices=1`
for a single device, with its convolutions on Eigen; `--parts navigate` alone
gets one device, as `--mode=navigate`). Where the shape is one we measured the official
PyTorch code at, its time is printed below ours with the ratio.
"""

import resource
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import optax

import numpy as np

from cldis_jax import (diffusion, models, navigation, objective, parallel, subspaces,
                       supervision, train_step)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/test.py", "Config file (path[:arg]).")
flags.DEFINE_integer("batch", None, "Global batch size; default: the config's.")
flags.DEFINE_integer("repeats", 5, "Timed runs after compilation.")
flags.DEFINE_list("parts", ["cldis", "diffae", "vae", "sample"],
                  "Which of cldis, diffae, vae, sample, navigate.")
flags.DEFINE_integer("sample_steps", 20, "DDIM steps for the sampling part.")
flags.DEFINE_integer("cpu_devices", 0, "CPU only: host devices the CPU is split into, the "
                     "batch sharded over them (0: one per core, as python -m cldis_jax.main).")

# The official PyTorch Diff-AE (phizaz/diffae) on the 2-core development
# machine, torch 2.13 CPU, 2 threads, fp32, eager, measured by us (docs/benchmarks.md):
# (image_size, base_channels, channel_mult, enc_channel_mult, batch) -> seconds.
OFFICIAL = {
    (64, 64, (1, 2, 4, 8), (1, 2, 4, 8, 8), 8): dict(diffae=4.33, ddim20=24.7),
    (32, 32, (1, 2, 4), (1, 2, 4, 4), 32): dict(diffae=1.15),
}


def _peak_memory_gib():
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**30, "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"


def _flops(compiled):
  """Global flops of a program SPMD-partitioned over every device (XLA counts one)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return (float(cost.get("flops", 0.0)) if cost else 0.0) * jax.device_count()


def _time(fn, args, repeats, chain=True):
  """Compiles fn, then runs it `repeats` times; returns (compile_s, times, flops).

  With `chain`, each run's outputs are the next run's inputs (a training step
  that donates its state); otherwise every run gets the same inputs.
  """
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  flops = _flops(compiled)
  times = []
  for i in range(repeats + 1):  # the first run warms caches and is not counted
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    args = out if chain else args
    if i:
      times.append(time.perf_counter() - start)
  return compile_s, times, flops


def official_seconds(config, batch, part):
  """The official code's time for this shape and part, if we measured it."""
  d = config.model.diffae
  key = (config.model.image_size, d.base_channels, tuple(d.channel_mult),
         tuple(d.enc_channel_mult), batch)
  return OFFICIAL.get(key, {}).get(part)


def _report(name, batch, compile_s, times, flops, note="", official=None):
  med = statistics.median(times)
  mem, what = _peak_memory_gib()
  print(f"{name:<8} step {med:8.4f} s (min {min(times):.4f}, max {max(times):.4f}, "
        f"n={len(times)})  {batch / med:9.2f} img/s  compile {compile_s:6.1f} s  "
        f"{flops / 1e9:10.2f} GFLOP/step  {flops / med / 1e12:7.3f} TFLOP/s  "
        f"{what} {mem:.2f} GiB{note}")
  if official:
    print(f"{'':<8} official PyTorch code, same shape (measured on the development machine): "
          f"{official:.2f} s, {batch / official:.2f} img/s; ours / theirs {official / med:.2f}")


def _adam(config):
  return optax.chain(optax.clip_by_global_norm(config.optim.grad_clip_norm),
                     optax.adam(config.optim.learning_rate))


def diffae_step_fn(config, diffae):
  """(params, opt_state, x0, rng) -> same, one eps-loss Adam step on encoder + UNet."""
  tx = _adam(config)
  process = diffusion.process(config.diffusion)

  def step(params, opt_state, x0, rng):
    k_diff, k_drop, rng = jax.random.split(rng, 3)
    t, noise, x_t = objective.diffusion_inputs(process, x0, k_diff)

    def loss_fn(p):
      eps = diffae.apply({"params": p}, x0, x_t, t, train=True, rngs={"dropout": k_drop})
      return jnp.mean(diffusion.eps_mse(eps, noise))

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, x0, rng

  return jax.jit(step, donate_argnums=(0, 1)), tx


def vae_step_fn(config, vae):
  tx = _adam(config)

  def step(params, opt_state, x0, rng):
    k_z, rng = jax.random.split(rng)

    def loss_fn(p):
      out = vae.apply({"params": p}, x0, k_z)
      return jnp.mean(out["nll"] + out["kl"])

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, x0, rng

  return jax.jit(step, donate_argnums=(0, 1)), tx


def denoise_flops(diffae, params, x0):
  """XLA's flop count of one denoiser call (it counts a scan body only once)."""
  z = jnp.zeros((x0.shape[0], diffae.z_dim))
  t = jnp.zeros((x0.shape[0],), jnp.int32)
  call = jax.jit(lambda p, x: diffae.apply({"params": p}, x, t, z, method="denoise"))
  return _flops(call.lower(params, x0).compile())


def sample_fn(config, diffae, steps):
  process = diffusion.process(config.diffusion, steps)

  def sample(params, x0, x_T):
    variables = {"params": params}
    z = diffae.apply(variables, x0, method="encode")
    eps_fn = lambda x, t: diffae.apply(variables, x, t, z, method="denoise")
    return process.ddim_sample(eps_fn, x_T)

  return jax.jit(sample)


def step_inputs(config, x0, mesh) -> dict:
  """The train step's batch: x0, with subspaces random region maps, and with
  labelled factors random labels (a quarter of them unknown) and a labelled
  batch (the cost is the same)."""
  if subspaces.enabled(config):
    regions = len(subspaces.data_regions(config))
    maps = np.random.default_rng(0).integers(0, regions, x0.shape[:3]).astype(np.int32)
    return {"image": x0, "region": jax.device_put(maps, parallel.batch_sharding(mesh))}
  if not supervision.enabled(config):
    return {"image": x0}
  few = supervision.labelled_batch_size(config, mesh.size)
  sizes = np.asarray(config.model.labels.sizes)
  rng = np.random.default_rng(0)
  labels = lambda n: np.where(rng.random((n, len(sizes))) < 0.25, -1,
                              rng.integers(0, sizes, (n, len(sizes)))).astype(np.int32)
  sharded = parallel.batch_sharding(mesh)
  put = lambda a: jax.device_put(a, sharded)
  return {"image": x0, "labels": put(labels(len(x0))),
          "labelled_image": put(np.asarray(x0)[np.arange(few) % len(x0)]),
          "labelled_labels": put(np.abs(labels(few)))}


def main(argv):
  del argv
  config = FLAGS.config
  batch = FLAGS.batch or config.train.batch_size
  # navigation runs on one device, and python -m cldis_jax.main gives it just one
  parallel.split_cpu(FLAGS.cpu_devices or int(FLAGS.parts == ["navigate"]), batch)
  nets = models.build_models(config.model)
  size, channels = config.model.image_size, config.model.in_channels
  print(f"{config_flags.get_config_filename(FLAGS['config'])}  batch {batch}  "
        f"{size}x{size}  dtype {config.model.dtype}  {jax.device_count()} x {jax.devices()[0].device_kind}  jax {jax.__version__}")

  mesh = parallel.data_mesh()
  parallel.check_batch_divides(batch, mesh, "--batch")
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  params = jax.device_put(models.init_params(nets, jax.random.key(0)), replicated)
  x0 = jax.device_put(jax.random.uniform(jax.random.key(1), (batch, size, size, channels),
                                         minval=-1, maxval=1), sharded)
  rng = jax.random.key(2)
  parts = FLAGS.parts
  if "cldis" in parts:
    config.train.batch_size = batch
    state = train_step.init_state_on_mesh(config, nets, jax.random.key(0), mesh)
    step = train_step.make_train_step(config, nets, mesh)
    rng_root = jax.device_put(jax.random.key(4), replicated)
    closed_loop = lambda s, x, r: (step(s, x, r)[0], x, r)  # chain the state only
    inputs = step_inputs(config, x0, mesh)
    labelled = (f"  (+ a labelled batch of {len(inputs['labelled_image'])})"
                if "labelled_image" in inputs else "")
    _report("cldis", batch, *_time(jax.jit(closed_loop, donate_argnums=0),
                                   (state, inputs, rng_root), FLAGS.repeats), labelled)
    del state
  if "diffae" in parts:
    step, tx = diffae_step_fn(config, nets.diffae)
    p = jax.tree.map(jnp.copy, params["diffae"])
    _report("diffae", batch, *_time(step, (p, tx.init(p), x0, rng), FLAGS.repeats),
            official=official_seconds(config, batch, "diffae"))
  if "vae" in parts:
    step, tx = vae_step_fn(config, nets.vae)
    p = jax.tree.map(jnp.copy, params["vae"])
    _report("vae", batch, *_time(step, (p, tx.init(p), x0, rng), FLAGS.repeats))
  if "sample" in parts:
    x_T = jax.device_put(jax.random.normal(jax.random.key(3), x0.shape), sharded)
    sample = sample_fn(config, nets.diffae, FLAGS.sample_steps)
    compile_s, times, _ = _time(sample, (params["diffae"], x0, x_T), FLAGS.repeats,
                                chain=False)
    flops = FLAGS.sample_steps * denoise_flops(nets.diffae, params["diffae"], x0)
    _report(f"ddim{FLAGS.sample_steps}", batch, compile_s, times, flops,
            f"  ({statistics.median(times) / FLAGS.sample_steps:.4f} s per model call; "
            "flops: steps x one denoiser call)",
            official=(official_seconds(config, batch, "ddim20")
                      if FLAGS.sample_steps == 20 else None))
  if "navigate" in parts:
    n_batch = FLAGS.batch or config.navigate.batch_size
    nav = navigation.build(config)
    z = nav.directions.z_dim
    state = navigation.init_state(config, nav, jax.random.key(0), np.zeros(z), np.eye(z), 0)
    step = navigation.make_step(config, nets, nav)
    x = jax.random.uniform(jax.random.key(5), (n_batch, size, size, channels), minval=-1,
                           maxval=1)
    single = jax.device_get(params)
    chained = lambda s, p, x, r: (step(s, p, x, r)[0], p, x, r)
    _report("navigate", n_batch, *_time(jax.jit(chained, donate_argnums=0),
                                        (state, single, x, jax.random.key(6)), FLAGS.repeats),
            f"  (decode_steps {config.navigate.decode_steps}, "
            f"reconstructor width {config.navigate.reconstructor.width})")


if __name__ == "__main__":
  app.run(main)
