"""FID as Diff-AE reports it (`--mode=evaluate` with "fid" in
evaluate.metrics): pool3 features of the FID Inception
(`models.inception`, weights from pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth`, given by `evaluate.fid.weights`;
nothing is downloaded), on images quantised to uint8 as the PNGs Diff-AE
writes, and the Fréchet distance of `metrics.generation`.

- sampling FID: `evaluate.fid.num_images` unconditional samples (the latent
  DDIM, sample.latent_steps / image_steps) against the reference images;
- autoencoding FID: the reference images themselves, encoded and decoded
  from fresh x_T (Diff-AE's autoencoding protocol), against the reference.

The reference is the first `num_images` images of the dataset (Diff-AE's
protocol, without its random flips) or a seeded draw
(`evaluate.fid.reference = "random"`); its statistics are cached in
`<workdir>/eval/fid_reference/` keyed by dataset, size, choice and weights
file, and reused. The protocol goes into the results.

With `evaluate.fid.precision_recall_images` > 0, both also get improved
precision and recall (`metrics.generation.precision_recall`, k = 3) in the
same features, on the first that many images of each set; the reference's
features are cached with its moments.
"""

import functools
import hashlib
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import convert, data, errors, grids, latent, writer as writer_lib
from cldis_jax.metrics import generation
from cldis_jax.models.inception import FIDInception

REFERENCES = ("first", "random")
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"


class InceptionWeightsError(errors.UserError, ValueError):
  """The FID Inception weights file is missing, unreadable or not the network's."""


def unavailable(fid_config) -> str | None:
  """Why FID cannot be computed with this config (one line), or None."""
  if not fid_config.weights:
    return (f"evaluate.fid.weights is not set: give pytorch-fid's {PYTORCH_FID_FILE} (FID is "
            "never approximated without it)")
  if not os.path.isfile(fid_config.weights):
    return f"evaluate.fid.weights {fid_config.weights!r} does not exist"
  if fid_config.reference not in REFERENCES:
    return (f"evaluate.fid.reference = {fid_config.reference!r}; valid: "
            f"{', '.join(REFERENCES)}")
  return None


def load_inception(path: str) -> dict:
  """Our FID Inception params from pytorch-fid's .pth (or an .npz of the
  same keys); InceptionWeightsError naming the file otherwise."""
  template = jax.eval_shape(lambda: FIDInception().init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
  try:
    state_dict = convert.load_state_dict(path, prefix="")
    return convert.inception_from_torch(state_dict, template)
  except (convert.CheckpointMismatchError, errors.NoCheckpointError, OSError, ValueError) as e:
    raise InceptionWeightsError(f"evaluate.fid.weights {path}: not pytorch-fid's Inception "
                                f"weights ({errors.one_line(e)})") from e


@functools.partial(jax.jit, static_argnums=0)
def _features(net, params, images_uint8):
  return net.apply({"params": params}, images_uint8.astype(jnp.float32) / 255.0)


def features(params, images, batch_size: int) -> np.ndarray:
  """uint8 images (N, H, W, 3) -> pool3 features (N, 2048), float64."""
  net = FIDInception()
  out = [np.asarray(_features(net, params, jnp.asarray(images[i:i + batch_size])), np.float64)
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out)


def reference_rows(config, source) -> np.ndarray:
  f = config.evaluate.fid
  n = min(f.num_images, len(source))
  if f.reference == "first":
    return np.arange(n)
  return np.sort(np.random.RandomState(config.evaluate.seed).choice(len(source), n,
                                                                     replace=False))


def to_uint8_rgb(images) -> np.ndarray:
  x = grids.to_uint8(images)
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def reference_stats(config, source, params, cache_dir: str) -> tuple:
  """(mean, covariance, features of the first `precision_recall_images`
  images or None) of the reference images, from the cache when it holds this
  dataset, size, choice, weights file and precision/recall count."""
  f = config.evaluate.fid
  rows = reference_rows(config, source)
  kept = _pr_count(f, len(rows))
  with open(f.weights, "rb") as fh:
    weights_id = hashlib.sha256(fh.read()).hexdigest()[:16]
  key = (f"{source.name.replace('/', '_')}_{config.model.image_size}px_{f.reference}{len(rows)}"
         f"{f'_pr{kept}' if kept else ''}_{weights_id}")
  path = os.path.join(cache_dir, key + ".npz")
  if os.path.isfile(path):
    with np.load(path) as cached:
      return cached["mu"], cached["sigma"], (cached["features"] if kept else None)
  logging.info("FID: the reference statistics of %d images (cached in %s)", len(rows), path)
  feats = np.concatenate([
      features(params, to_uint8_rgb(data.images_at(source, rows[i:i + 1000])), f.batch_size)
      for i in range(0, len(rows), 1000)])
  mu, sigma = generation.gaussian_stats(feats)
  kept_feats = feats[:kept].astype(np.float32) if kept else None
  os.makedirs(cache_dir, exist_ok=True)
  with writer_lib.replacing(path) as tmp:
    with open(tmp, "wb") as fh:
      np.savez(fh, mu=mu, sigma=sigma, **({"features": kept_feats} if kept else {}))
  return mu, sigma, kept_feats


def _pr_count(fid_config, num_images: int) -> int:
  """Images per set for precision/recall: 0 (off) or at most num_images."""
  return min(fid_config.precision_recall_images, num_images)


def _scores(feats, reference: tuple) -> dict:
  """{"fid"} of generated features against the reference, and with its
  features, "precision" and "recall" on the first as many of each."""
  mu, sigma, ref_feats = reference
  out = {"fid": generation.frechet_distance(generation.gaussian_stats(feats), (mu, sigma))}
  if ref_feats is not None:
    out.update(generation.precision_recall(ref_feats, feats[:len(ref_feats)]))
  return out


def evaluate_fid(config, models, params, source, generator, cache_dir: str) -> dict:
  """{"sampling": {"fid", "precision", "recall"} (with a latent DDIM),
  "autoencoding": the same, "protocol"}; precision and recall only with
  evaluate.fid.precision_recall_images > 0."""
  f = config.evaluate.fid
  inception = load_inception(f.weights)
  reference = reference_stats(config, source, inception, cache_dir)
  rows = reference_rows(config, source)
  out = {"protocol": dict(num_images=len(rows), reference=f.reference, weights=f.weights,
                          image_steps=config.sample.image_steps, resize="bilinear 299, "
                          "align_corners=False", quantised="uint8",
                          precision_recall=dict(images=_pr_count(f, len(rows)),
                                                k=generation.NEAREST, features="pool3"))}
  recon = []
  for i in range(0, len(rows), 1000):
    images = data.images_at(source, rows[i:i + 1000])
    decoded = latent.autoencode(config, models, params, images, config.sample.seed + 1 + i)
    recon.append(features(inception, to_uint8_rgb(decoded), f.batch_size))
  out["autoencoding"] = _scores(np.concatenate(recon), reference)
  if generator is not None:
    gen_config, net, state = generator
    sampled = []
    for i in range(0, len(rows), 1000):  # 1,000 images at a time, each chunk its own seed
      drawn = latent.generate(gen_config, models, params, net, state, min(1000, len(rows) - i),
                              gen_config.sample.seed + i)["images"]
      sampled.append(features(inception, to_uint8_rgb(drawn), f.batch_size))
    out["sampling"] = _scores(np.concatenate(sampled), reference)
    out["protocol"]["latent_steps"] = gen_config.sample.latent_steps
  return out
