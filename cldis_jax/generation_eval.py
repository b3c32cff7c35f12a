"""The `generation` column of `--mode=evaluate`: how close unconditional
samples (the latent DDIM, `--mode=train_latent`) come to the data, judged
offline by the factor oracle (`metrics.factor_probe`, a CNN trained on every
ground-truth factor of the dataset, evaluation only).

On `sample.quality_images` images each of three sets:

- `real`: images drawn with evaluate.seed;
- `samples`: unconditional samples of sample.seed;
- `reconstructions`: the real images encoded and decoded from fresh x_T
  (Diff-AE's autoencoding protocol), the ceiling a sampler of this decoder
  can reach;

the oracle reads every image (value, confidence, hidden-layer features), and
the column reports per factor the total variation distance between the
values read on each set and those read on the real images (and, for the
oracle itself, between its reading of the real images and their labels),
per factor the share of images read with probability >= `CONFIDENT`, and
the Fréchet distance in the oracle's features to the real images' (with, as
the floor, the distance between two halves of the real set).
`frechet_ratio` is the samples' distance over the reconstructions'. In the
same features, `precision` and `recall` (Kynkäänniemi et al., k = 3): the
share of a set's images inside the real images' manifold, and of real images
inside the set's.

`codes` separates the two stages: the Fréchet distance between the sampled
codes and the real images' codes (the latent DDIM's own error), next to the
same floor between halves of the real codes.
"""

import numpy as np

from cldis_jax import codes as codes_lib, data, latent
from cldis_jax.metrics import generation

CONFIDENT = 0.9


def evaluate_generation(config, models, params, source, oracle, generator) -> dict:
  """The column of the module doc; `generator` = (config with the latent
  DDIM's settings, LatentNet, LatentState)."""
  gen_config, net, state = generator
  n = config.sample.quality_images
  rows = np.random.RandomState(config.evaluate.seed).choice(len(source), n, replace=n > len(source))
  real = data.images_at(source, rows)
  drawn = latent.generate(gen_config, models, params, net, state, n, gen_config.sample.seed)
  sets = {"real": real, "samples": drawn["images"],
          "reconstructions": latent.autoencode(gen_config, models, params, real,
                                               gen_config.sample.seed + 1)}
  read = {name: oracle.read(images) for name, images in sets.items()}
  labels = source.factors_of(rows)[:, list(oracle.columns)]
  sizes = [source.factor_space.sizes[c] for c in oracle.columns]
  stats = {name: generation.gaussian_stats(r["features"]) for name, r in read.items()}
  real_codes = codes_lib.encode_z_sem(models, params, source, rows,
                                      batch_size=config.evaluate.encode_batch)
  out = {"images": n, "oracle_accuracy": dict(oracle.accuracy),
         "frechet_real_halves": _halves(read["real"]["features"]),
         "codes": dict(frechet=generation.frechet_distance(
             generation.gaussian_stats(drawn["z_sem"]), generation.gaussian_stats(real_codes)),
                       frechet_real_halves=_halves(real_codes))}
  for name in ("samples", "reconstructions"):
    out[name] = dict(
        total_variation={f: generation.total_variation(read[name]["index"][:, j],
                                                       read["real"]["index"][:, j], sizes[j])
                         for j, f in enumerate(oracle.names)},
        confident=_confident(read[name], oracle.names),
        frechet=generation.frechet_distance(stats[name], stats["real"]),
        **generation.precision_recall(read["real"]["features"], read[name]["features"]))
    out[name]["max_total_variation"] = max(out[name]["total_variation"].values())
  out["real"] = dict(
      confident=_confident(read["real"], oracle.names),
      oracle_vs_labels={f: generation.total_variation(read["real"]["index"][:, j], labels[:, j],
                                                      sizes[j])
                        for j, f in enumerate(oracle.names)})
  out["frechet_ratio"] = out["samples"]["frechet"] / max(out["reconstructions"]["frechet"], 1e-12)
  return out


def _halves(features) -> float:
  """The Fréchet distance between the first and second half of a set."""
  half = len(features) // 2
  return generation.frechet_distance(generation.gaussian_stats(features[:half]),
                                     generation.gaussian_stats(features[half:]))


def _confident(reading, names) -> dict[str, float]:
  """Per factor, the share of images read with probability >= CONFIDENT."""
  sure = reading["confidence"] >= CONFIDENT
  return {f: float(sure[:, j].mean()) for j, f in enumerate(names)}
