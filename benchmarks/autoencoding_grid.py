"""How a trained workdir decodes its own codes: rows = input images, their
reconstruction from the DDIM-inverted x_T, and from fresh noise (Diff-AE's
autoencoding protocol, `sample.image_steps` steps): the second row is what
editing sees, the third what unconditional sampling can reach.

  python benchmarks/autoencoding_grid.py WORKDIR OUT.png [--count 8] [--seed 5]
"""

import argparse

import numpy as np

from cldis_jax import api, grids, latent


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("out")
  parser.add_argument("--count", type=int, default=8)
  parser.add_argument("--seed", type=int, default=5)
  args = parser.parse_args()
  model = api.load(args.workdir)
  x = model.images(count=args.count)
  fresh = latent.autoencode(model.config, model.models, model.params, x, args.seed)
  rows = np.stack([x, model.reconstruct(x), fresh])
  print(grids.save_png(args.out, grids.tile(grids.to_uint8(rows)), 2))


if __name__ == "__main__":
  main()
