"""Images/s of the procedural sources and of the whole input pipeline.

  python benchmarks/data_benchmark.py
  python benchmarks/data_benchmark.py --config.model.image_size=64 --batch 64

Part 1, each procedural source at --source_resolution (default 64x64):
  cold   a fresh source, --images random indices (empty caches)
  warm   new random indices once the shapes3d layer cache is full (all 480
         hue-free layers rendered; dsprites has no such cache and renders anew)
  cached the same indices again (dsprites' image cache; shapes3d's layers)
Part 2, the pipeline for --config (default: procedural shapes3d at 32x32, batch
32 on every local device, the quickstart's size): global sharded batches
through `iterate()` (reader threads, prefetch, device transfer), after a
warm-up of --warmup batches. Compare with the training step's images/s
(benchmarks/step_benchmark.py) on the same machine.
"""

import statistics
import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from cldis_jax import data

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/test.py", "Config file (path[:arg]).")
flags.DEFINE_integer("batch", 32, "Global batch size of the pipeline part.")
flags.DEFINE_integer("image_size", 32, "Resolution of the pipeline part.")
flags.DEFINE_integer("source_resolution", 64, "Resolution of the source part.")
flags.DEFINE_integer("images", 512, "Images per source measurement.")
flags.DEFINE_integer("steps", 50, "Timed pipeline batches.")
flags.DEFINE_integer("warmup", 20, "Untimed pipeline batches first.")
flags.DEFINE_integer("repeats", 3, "Repeats of each measurement (median, min, max shown).")


def _rate(fn, n, repeats):
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    rates.append(n / (time.perf_counter() - start))
  return statistics.median(rates), min(rates), max(rates)


def _show(label, rates):
  median, low, high = rates
  print(f"  {label:<8} {median:9.0f} img/s   (min {low:.0f}, max {high:.0f})")


def source_part(resolution, n, repeats):
  rng = np.random.default_rng(0)
  for cls in (data.ProceduralShapes3D, data.ProceduralDSprites):
    print(f"{cls.__name__} at {resolution}x{resolution}, {n} images per run")
    sources = []

    def cold():
      sources.append(cls(resolution))
      sources[-1].__getitems__(rng.integers(0, len(sources[-1]), n))
    _show("cold", _rate(cold, n, repeats))
    source = sources[-1]
    if isinstance(source, data.ProceduralShapes3D):
      source.render_all_layers()
    _show("warm", _rate(lambda: source.__getitems__(rng.integers(0, len(source), n)),
                        n, repeats))
    fixed = rng.integers(0, len(source), n)
    source.__getitems__(fixed)
    _show("cached", _rate(lambda: source.__getitems__(fixed), n, repeats))


def pipeline_part(config, steps, warmup, repeats):
  source = data.source_of(config)
  pipeline = data.build_pipeline(config, source)
  batch = config.train.batch_size
  print(f"pipeline: {source.name} {config.model.image_size}x{config.model.image_size}, "
        f"batch {batch} over {jax.device_count()} device(s), "
        f"{config.data.num_threads} reader threads, prefetch {config.data.prefetch}")
  stream = pipeline.iterate()
  for _ in range(warmup):
    jax.block_until_ready(next(stream))

  def run():
    for _ in range(steps):
      jax.block_until_ready(next(stream))
  _show("batches", _rate(run, steps * batch, repeats))
  stream.close()


def main(argv):
  del argv
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}")
  source_part(FLAGS.source_resolution, FLAGS.images, FLAGS.repeats)
  config = FLAGS.config
  config.model.image_size, config.train.batch_size = FLAGS.image_size, FLAGS.batch
  pipeline_part(config, FLAGS.steps, FLAGS.warmup, FLAGS.repeats)


if __name__ == "__main__":
  app.run(main)
