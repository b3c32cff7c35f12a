"""The `autoencoding` column of `--mode=evaluate`: does the semantic code
carry the image, or only the scene with the noise supplying the rest?

On `evaluate.autoencoding.images` images drawn with evaluate.seed, each
encoded to its own z_sem:

- `fresh`: decoded from `noises` fresh x_T each (edit.decode_steps DDIM
  steps, edit.guidance): the pixel MSE to the input and, with ground-truth
  factors, per factor the share of decodes the factor oracle
  (`metrics.factor_probe`) reads as it reads the input (`agreement`) and as
  the label says (`accuracy`, next to the oracle's own held-out accuracy on
  real images, `oracle_accuracy`);
- `inverted`: decoded from the x_T of DDIM inversion (edit.invert_steps):
  the same numbers for the reconstruction that edits start from;
- `true_labels` (models with labelled factors of the dataset's ground truth):
  decoded from the same fresh x_T, with each labelled factor's code the row
  of its true value (the code a labelled training image gets) instead of the
  classifiers' mix: whether the denoiser draws what the factor codes say,
  apart from how well the classifiers read the image;
- `inception` (with evaluate.fid.weights): the mean distance between the
  pool3 features of each input and of its fresh decodes;
- `code_use`: per timestep bin, the x0-space error of the denoiser's
  prediction under the image's own code and under another image's code, and
  their gap: where in t the denoiser reads the code. It is drawn as
  `autoencoding_code_use.png` next to the metrics.
"""

import functools
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402

from cldis_jax import (data, diffusion, fid, inference, models as models_lib,  # noqa: E402
                       supervision)

PLOT = "autoencoding_code_use.png"


def rows_of(config, source) -> np.ndarray:
  n = min(config.evaluate.autoencoding.images, len(source))
  return np.sort(np.random.RandomState(config.evaluate.seed).choice(len(source), n,
                                                                   replace=False))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _x0_errors(models, process, params, x0, z_sem, t, noise):
  """(B,) x0-space MSE of the prediction at step indices t under z_sem and
  under the next image's code (rolled by one)."""
  x_t = process.q_sample(x0, t, noise)

  def error(z):
    eps = process.eps_from(x_t, t, models_lib.denoise(models, params, x_t, t, z))
    x0_hat = process.predict_x0(x_t, t, eps)
    return jnp.mean(jnp.square(x0_hat - x0).reshape(x0.shape[0], -1), axis=-1)

  return error(z_sem), error(jnp.roll(z_sem, 1, axis=0))


def code_use(config, models, params, images, z_sem) -> dict:
  """Per bin of `evaluate.autoencoding.bins` equal timestep bins: the mean
  x0 error under the own and another image's code, and the gap."""
  a = config.evaluate.autoencoding
  process = diffusion.process(config.diffusion)
  edges = np.linspace(0, process.num_timesteps, a.bins + 1).astype(int)
  rng = np.random.RandomState(config.evaluate.seed + 1)
  own, other = [], []
  for low, high in zip(edges[:-1], edges[1:]):
    t = rng.randint(low, high, size=len(images)).astype(np.int32)
    noise = rng.standard_normal(images.shape).astype(np.float32)
    e_own, e_other = _x0_errors(models, process, params, jnp.asarray(images),
                                jnp.asarray(z_sem), jnp.asarray(t), jnp.asarray(noise))
    own.append(float(np.mean(e_own)))
    other.append(float(np.mean(e_other)))
  return dict(bin_edges=edges.tolist(), x0_mse_own_code=own, x0_mse_other_code=other,
              gap=[o - s for s, o in zip(own, other)])


def plot_code_use(curve: dict, path: str) -> str:
  edges = np.asarray(curve["bin_edges"])
  centres = (edges[:-1] + edges[1:]) / 2
  fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=110)
  ax.plot(centres, curve["x0_mse_own_code"], "o-", label="its own code")
  ax.plot(centres, curve["x0_mse_other_code"], "s--", label="another image's code")
  ax.set(xlabel="timestep t", ylabel="x0 prediction MSE (log)", yscale="log",
         title="Where the denoiser reads the code (gap: code used)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def in_batches(fn, n: int, size: int):
  """fn(slice) over [0, n) in slices of `size`, concatenated on the host."""
  parts = [fn(slice(i, i + size)) for i in range(0, n, size)]
  return np.concatenate([np.asarray(p) for p in parts])


def _reading(oracle, images, reference_index, labels) -> dict:
  """Per factor: the share read as the input is read, and as labelled."""
  index = oracle.read(images)["index"]
  reps = len(index) // len(reference_index)
  return dict(agreement={f: float(np.mean(index[:, j] == np.tile(reference_index[:, j], reps)))
                         for j, f in enumerate(oracle.names)},
              accuracy={f: float(np.mean(index[:, j] == np.tile(labels[:, j], reps)))
                        for j, f in enumerate(oracle.names)})


_code_with_labels = jax.jit(models_lib.semantic_code, static_argnums=0)


def _true_labels(config, source, rows) -> np.ndarray | None:
  """(N, k) true values of the labelled factors, or None where the model has
  none or they are not ground-truth factors of the source."""
  factors = supervision.factors_of(config)
  names = source.factor_names if source.factor_space is not None else ()
  if not factors or not set(factors) <= set(names):
    return None
  return source.factors_of(rows)[:, [names.index(f) for f in factors]]


def _mse(decoded, images) -> float:
  reps = len(decoded) // len(images)
  return float(np.mean(np.square(decoded - np.tile(images, (reps, 1, 1, 1)))))


def evaluate_autoencoding(config, models, params, source, oracle, out_dir: str) -> dict:
  """The column of the module doc (`oracle`: the factor probe, or None)."""
  a, e = config.evaluate.autoencoding, config.edit
  rows = rows_of(config, source)
  images = data.images_at(source, rows)
  size = config.evaluate.encode_batch
  z_sem = in_batches(lambda s: inference.encode(models, params, jnp.asarray(images[s])),
                     len(images), size)
  decode_p = diffusion.process(config.diffusion, e.decode_steps, guidance=e.guidance)
  invert_p = diffusion.process(config.diffusion, e.invert_steps)

  def from_fresh_noise(codes):
    out = []
    for k in range(a.noises):
      x_T = jax.random.normal(jax.random.key(config.evaluate.seed + 100 + k), images.shape)
      out.append(in_batches(lambda s, x_T=x_T: inference.decode(
          models, decode_p, params, jnp.asarray(codes[s]), x_T[s]), len(images), size))
    return np.concatenate(out)

  fresh = from_fresh_noise(z_sem)
  x_T = in_batches(lambda s: inference.invert(models, invert_p, params, jnp.asarray(images[s]),
                                              jnp.asarray(z_sem[s])), len(images), size)
  inverted = in_batches(lambda s: inference.decode(models, decode_p, params,
                                                   jnp.asarray(z_sem[s]), x_T[s]),
                        len(images), size)
  out = dict(images=len(rows), noises=a.noises, decode_steps=e.decode_steps,
             invert_steps=e.invert_steps, guidance=e.guidance,
             fresh=dict(mse=_mse(fresh, images)), inverted=dict(mse=_mse(inverted, images)))
  if oracle is not None:
    labels = source.factors_of(rows)[:, list(oracle.columns)]
    reference = oracle.read(images)["index"]
    out["oracle_accuracy"] = dict(oracle.accuracy)
    out["fresh"].update(_reading(oracle, fresh, reference, labels))
    out["inverted"].update(_reading(oracle, inverted, reference, labels))
    out["fresh"]["min_agreement"] = min(out["fresh"]["agreement"].values())
    known = _true_labels(config, source, rows)
    if known is not None:
      coded = in_batches(lambda s: _code_with_labels(models, params, jnp.asarray(images[s]),
                                                     jnp.asarray(known[s])), len(images), size)
      decoded = from_fresh_noise(coded)
      out["true_labels"] = dict(mse=_mse(decoded, images),
                                **_reading(oracle, decoded, reference, labels))
  why = fid.unavailable(config.evaluate.fid)
  if why is None:
    inception = fid.load_inception(config.evaluate.fid.weights)
    feats = lambda x: fid.features(inception, fid.to_uint8_rgb(x), config.evaluate.fid.batch_size)
    real, decoded = feats(images), feats(fresh)
    reps = len(decoded) // len(real)
    out["inception"] = dict(feature_distance=float(np.mean(np.linalg.norm(
        decoded - np.tile(real, (reps, 1)), axis=-1))))
  else:
    out["inception"] = dict(unavailable=why)
  out["code_use"] = code_use(config, models, params, images, z_sem)
  out["code_use"]["plot"] = plot_code_use(out["code_use"], os.path.join(out_dir, PLOT))
  return out
