"""Independent subspaces tied to image regions on the quickstart: procedural
Shapes3D at 32x32, z_sem split into a floor, a wall and an object block of 8
dims each, trained with the swap loss (from the renderer's region maps) and
the HSIC independence loss beside CL-Dis.

  python -m cldis_jax.main --config configs/shapes3d_subspaces.py --workdir /tmp/cldis_swaps
  python -m cldis_jax.main --config configs/shapes3d_subspaces.py --workdir /tmp/cldis_swaps \\
      --mode=edit --config.edit.dataset_images=6

The edit writes one swap matrix per block (`edit/<step>/swap_floor.png`, ...):
each image with that block of its code taken from each other image.
`:cross_covariance` uses the cross-correlation penalty instead of HSIC.
Same networks, steps and batch as the quickstart, except z_sem's width (24:
the three blocks and nothing else).
"""

import os

from cldis_jax.config_lib import load_config


def get_config(arg=None):
  config = load_config(os.path.join(os.path.dirname(__file__), "quickstart.py"))
  if arg not in (None, "", "cross_covariance"):
    raise ValueError(f"configs/shapes3d_subspaces.py takes 'cross_covariance' or nothing, "
                     f"got {arg!r}")
  config.model.diffae.z_dim = 24
  config.subspaces.update(dict(
      blocks=("floor", "wall", "object"), sizes=(8, 8, 8),
      factors=("floor_hue", "wall_hue", "object_hue"),  # what the oracle checks in a swap
      independence=arg or "hsic"))
  config.evaluate.metrics = ("subspaces", "mig", "dci")
  config.evaluate.representations = ("mu_s", "z_sem_pca")
  config.edit.directions = "swaps"
  return config
