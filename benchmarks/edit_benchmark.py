"""Inversion quality and the speed of the editing path on a trained workdir.

  python benchmarks/edit_benchmark.py --workdir /tmp/cldis_quickstart

Loads the workdir through `cldis_jax.api` (its stored config; override the
step counts with --invert_steps / --decode_steps), takes --images images at
seeded random rows of the dataset, and prints:

- the PSNR (dB, images in [0, 1]) of decode(encode(x), invert(x)), the
  DDIM-inverted reconstruction, and of decoding z_sem from fresh noise x_T ~
  N(0, I), which shows what the stochastic code x_T carries;
- images/s of encode, invert and decode (first call, with compilation,
  excluded; the mean of --repeats calls).

Rows are drawn uniformly from the whole dataset: for the quickstart (32,000
training samples out of 480,000 scenes) almost all of them were never
trained on.
"""

import time

from absl import app, flags
import jax
import numpy as np

from cldis_jax import api, checkpoint, data

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained workdir.")
flags.DEFINE_integer("images", 64, "Images to invert and reconstruct.")
flags.DEFINE_integer("batch", 16, "Images per call.")
flags.DEFINE_integer("invert_steps", 0, "DDIM inversion steps (0: the config's edit.invert_steps).")
flags.DEFINE_integer("decode_steps", 0, "DDIM decoding steps (0: the config's edit.decode_steps).")
flags.DEFINE_integer("repeats", 3, "Timed calls per function.")
flags.DEFINE_integer("seed", 1, "Seed of the image rows.")
flags.mark_flags_as_required(["workdir"])


def psnr(a, b) -> np.ndarray:
  """Per image, for images in [-1, 1] compared in [0, 1]."""
  mse = np.mean(np.square((np.clip(a, -1, 1) - np.clip(b, -1, 1)) / 2.0), axis=(1, 2, 3))
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def timed(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / FLAGS.repeats


def main(argv):
  del argv
  config = checkpoint.stored_config(FLAGS.workdir)
  if FLAGS.invert_steps:
    config.edit.invert_steps = FLAGS.invert_steps
  if FLAGS.decode_steps:
    config.edit.decode_steps = FLAGS.decode_steps
  model = api.load(FLAGS.workdir, config)
  rows = np.sort(np.random.RandomState(FLAGS.seed).choice(len(model.source), FLAGS.images,
                                                          replace=False))
  inverted, fresh = [], []
  for i in range(0, len(rows), FLAGS.batch):
    x = data.images_at(model.source, rows[i:i + FLAGS.batch])
    z = model.encode(x)
    inverted.append(psnr(model.decode(z, model.invert(x, z)), x))
    noise = np.random.RandomState(i).randn(*x.shape).astype(np.float32)
    fresh.append(psnr(model.decode(z, noise), x))
  inverted, fresh = np.concatenate(inverted), np.concatenate(fresh)
  print(f"{model.config.data.name} at step {model.step}, {len(rows)} images, "
        f"invert {config.edit.invert_steps} / decode {config.edit.decode_steps} DDIM steps")
  print(f"PSNR, inverted x_T:  {inverted.mean():.2f} dB (std {inverted.std():.2f}, "
        f"min {inverted.min():.2f})")
  print(f"PSNR, fresh x_T:     {fresh.mean():.2f} dB (std {fresh.std():.2f})")
  x = data.images_at(model.source, rows[:FLAGS.batch])
  z = model.encode(x)
  x_T = model.invert(x, z)
  n = len(x)
  for name, fn, args in (("encode", model.encode, (x,)), ("invert", model.invert, (x, z)),
                         ("decode", model.decode, (z, x_T))):
    seconds = timed(fn, *args)
    print(f"{name:<8} batch {n}: {seconds:.3f} s per call, {n / seconds:.1f} img/s")


if __name__ == "__main__":
  app.run(main)
