"""Where decodes from fresh noise miss a factor: near misses (one class from
the input, as for a neighbouring hue or the next size) or wrong values (a hue
taken from another region)?

  python benchmarks/autoencoding_misses.py RUN_WORKDIR [--seed 123]

RUN_WORKDIR is one training run on a dataset with ground-truth factors (a
study's runs/<variant>/seed<k>). The `autoencoding` column's images
(evaluate.autoencoding.images, evaluate.seed) are encoded, decoded from one
fresh noise each (edit.decode_steps DDIM steps) and read by the factor
oracle, trained as the evaluation trains it. Per factor it prints the share
of decodes read as the input is read, the share of the misses one class
away (hues counted round the circle), the misses per input class and the
commonest (input, decode) pairs; for the wall hue, how many of its misses
took the floor's or the object's hue.
"""

import argparse
import collections

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import autoencoding_eval, data, diffusion, evaluate, inference, trained


def class_distance(a: np.ndarray, b: np.ndarray, classes: int, circular: bool) -> np.ndarray:
  d = np.abs(a - b)
  return np.minimum(d, classes - d) if circular else d


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--seed", type=int, default=123, help="seed of the fresh noise")
  args = parser.parse_args()
  run = trained.load(args.workdir)
  config, source = run.config, run.source
  oracle = evaluate._train_probe(config, source)  # pylint: disable=protected-access
  images = data.images_at(source, autoencoding_eval.rows_of(config, source))
  n, size = len(images), config.evaluate.encode_batch
  z_sem = autoencoding_eval.in_batches(
      lambda s: inference.encode(run.models, run.params, jnp.asarray(images[s])), n, size)
  process = diffusion.process(config.diffusion, config.edit.decode_steps)
  x_T = jax.random.normal(jax.random.key(args.seed), images.shape)
  decoded = autoencoding_eval.in_batches(
      lambda s: inference.decode(run.models, process, run.params, jnp.asarray(z_sem[s]), x_T[s]),
      n, size)
  want, got = oracle.read(images)["index"], oracle.read(decoded)["index"]
  print(f"step {run.step}, {n} images, one fresh noise each")
  for j, name in enumerate(oracle.names):
    miss = want[:, j] != got[:, j]
    classes = source.factor_space.sizes[oracle.columns[j]]
    near = class_distance(want[miss, j], got[miss, j], classes, "hue" in name) == 1
    pairs = collections.Counter(zip(want[miss, j].tolist(), got[miss, j].tolist()))
    print(f"{name}: agreement {1 - miss.mean():.2f}, {miss.sum()} misses, "
          f"{near.mean() if miss.any() else 0:.2f} of them one class away; misses by input "
          f"class {np.bincount(want[miss, j], minlength=classes).tolist()}; commonest "
          f"(input, decode): {pairs.most_common(3)}")
    if name == "wall_hue" and miss.any():
      for other in ("floor_hue", "object_hue"):
        took = np.mean(got[miss, j] == want[miss, oracle.names.index(other)])
        print(f"  wall misses that took the {other.split('_')[0]}'s hue: {took:.2f}")


if __name__ == "__main__":
  main()
