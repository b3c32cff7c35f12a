"""CL-Dis on MPI3D at 64x64: `--config configs/mpi3d.py:VARIANT`, VARIANT in
toy (default), realistic, real.

  python -m cldis_jax.main --config configs/mpi3d.py:toy --workdir /tmp/cldis_mpi3d \
      --config.data.dir=/path/to/mpi3d

data.dir holds the published `mpi3d_<variant>.npz` (1,036,800 images, 7
factors; https://github.com/rr-learning/disentanglement_dataset). Recipe:
config_lib.disentanglement64_config.
"""

from cldis_jax.config_lib import disentanglement64_config

VARIANTS = ("toy", "realistic", "real")


def get_config(arg=None):
  variant = arg or "toy"
  if variant not in VARIANTS:
    raise ValueError(f"configs/mpi3d.py: variant {arg!r} is not one of {VARIANTS}")
  return disentanglement64_config(f"mpi3d/{variant}")
