"""Does the semantic code hold the factors at all? A probe per factor.

  python benchmarks/code_probe.py WORKDIR [--images 3000] [--train 2000]
      [--pixels | --untrained] [--whiten] [--mlp]

Encodes --images random rows of the workdir's dataset (with factors) with the
latest checkpoint's EMA encoder, z-scores z_sem (the code the denoiser is
conditioned on) on the first --train codes, fits a multinomial logistic
regression per factor on them and prints the accuracy on the rest. A factor
the probe reads but a decode from fresh noise does not show is in the code
and not read from it by the denoiser. With --pixels the same probe reads the
same images' raw pixels instead: what a linear read of the input holds.
With --untrained it reads the code of a freshly initialised encoder of the
run's architecture (initialised from --seed): what training added or removed.
With --whiten the codes are PCA-whitened instead of z-scored per dimension:
every direction that holds variance (more than 1e-8 of the largest, on the
train codes) gets unit variance, so that a factor held in a direction of
tiny variance is read as well as one held in the main axes (the denoiser
reads the code through a linear layer, and gradient descent finds the main
axes first). With --mlp the probe is a one-hidden-layer network (256 ReLU
units) instead of a linear one, to tell a factor that is absent from one
held nonlinearly.
"""

import argparse

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from cldis_jax import api, data, models


def whiten(z: np.ndarray, n: int) -> np.ndarray:
  """z centred and rotated onto the principal axes of its first n rows, each
  axis with variance above 1e-8 of the largest scaled to unit variance."""
  z = np.asarray(z, np.float64) - z[:n].mean(0)
  _, s, vt = np.linalg.svd(z[:n], full_matrices=False)
  var = s ** 2 / n
  share = var / var.sum()
  print("share of the variance on the first principal axes: "
        + " ".join(f"{v:.3f}" for v in share[:6])
        + f"; axes holding 99% of it: {int(np.searchsorted(np.cumsum(share), 0.99)) + 1}"
        f" of {len(share)}")
  keep = var > var[0] * 1e-8
  return z @ vt[keep].T / np.sqrt(var[keep])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--images", type=int, default=3000)
  parser.add_argument("--train", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  probed = parser.add_mutually_exclusive_group()
  probed.add_argument("--pixels", action="store_true",
                      help="probe the images' raw pixels instead of z_sem")
  probed.add_argument("--untrained", action="store_true",
                      help="probe the code of a freshly initialised encoder instead")
  parser.add_argument("--whiten", action="store_true",
                      help="PCA-whiten the codes instead of z-scoring each dimension")
  parser.add_argument("--mlp", action="store_true",
                      help="a one-hidden-layer probe instead of a linear one")
  args = parser.parse_args()
  model = api.load(args.workdir)
  if args.untrained:
    model.params = models.init_params(model.models, jax.random.key(args.seed))
  if model.source.factor_space is None:
    raise SystemExit(f"{args.workdir}: its dataset has no ground-truth factors to probe")
  rows = np.random.default_rng(args.seed).choice(len(model.source), args.images, replace=False)
  items = model.source.__getitems__(rows)  # random order: train and test share every value
  x = data.to_model_range(items["image"])
  if args.pixels:
    z, what = np.asarray(x, np.float64).reshape(len(x), -1), "raw pixels"
  else:
    z = np.concatenate([model.encode(x[i:i + 250]) for i in range(0, len(x), 250)])
    what = "z_sem untrained" if args.untrained else f"z_sem at step {model.step}"
  n = args.train
  z = whiten(z, n) if args.whiten else (z - z[:n].mean(0)) / (z[:n].std(0) + 1e-6)
  kind = "one-hidden-layer" if args.mlp else "linear"
  if args.whiten:
    what += f", whitened ({z.shape[1]} directions)"
  print(f"{args.workdir}: {kind} probe of {what}, {n} train / {len(z) - n} test images")
  for f, name in enumerate(model.source.factor_names):
    y = items["factors"][:, f]
    probe = (MLPClassifier((256,), max_iter=500, early_stopping=True, random_state=args.seed)
             if args.mlp else LogisticRegression(max_iter=2000)).fit(z[:n], y[:n])
    chance = np.bincount(y[n:]).max() / len(y[n:])
    print(f"  {name:12s} accuracy {probe.score(z[n:], y[n:]):.3f}   (majority class {chance:.3f})")


if __name__ == "__main__":
  main()
