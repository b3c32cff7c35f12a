"""Does the semantic code hold the factors at all? A linear probe per factor.

  python benchmarks/code_probe.py WORKDIR [--images 3000] [--train 2000]

Encodes --images random rows of the workdir's dataset (with factors) with the
latest checkpoint's EMA encoder, z-scores z_sem (the code the denoiser is
conditioned on) on the first --train codes, fits a multinomial logistic
regression per factor on them and prints the accuracy on the rest. A factor
the probe reads but a decode from fresh noise does not show is in the code
and not read from it by the denoiser.
"""

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

from cldis_jax import api, data


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--images", type=int, default=3000)
  parser.add_argument("--train", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  model = api.load(args.workdir)
  if model.source.factor_space is None:
    raise SystemExit(f"{args.workdir}: its dataset has no ground-truth factors to probe")
  rows = np.random.default_rng(args.seed).choice(len(model.source), args.images, replace=False)
  items = model.source.__getitems__(rows)  # random order: train and test share every value
  x = data.to_model_range(items["image"])
  z = np.concatenate([model.encode(x[i:i + 250]) for i in range(0, len(x), 250)])
  n = args.train
  z = (z - z[:n].mean(0)) / (z[:n].std(0) + 1e-6)
  print(f"{args.workdir} step {model.step}: linear probe of z_sem, {n} train / "
        f"{len(z) - n} test codes")
  for f, name in enumerate(model.source.factor_names):
    y = items["factors"][:, f]
    probe = LogisticRegression(max_iter=2000).fit(z[:n], y[:n])
    chance = np.bincount(y[n:]).max() / len(y[n:])
    print(f"  {name:12s} accuracy {probe.score(z[n:], y[n:]):.3f}   (majority class {chance:.3f})")


if __name__ == "__main__":
  main()
