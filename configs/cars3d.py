"""CL-Dis on Cars3D (17,568 renders of 183 cars, 3 factors) at 64x64.

  python -m cldis_jax.main --config configs/cars3d.py --workdir /tmp/cldis_cars3d \
      --config.data.dir=/path/to/cars

data.dir holds the published `car_*_mesh.mat` files (Reed et al. 2015, as
disentanglement_lib reads them). Recipe: config_lib.disentanglement64_config.
"""

from cldis_jax.config_lib import disentanglement64_config


def get_config(arg=None):
  del arg
  return disentanglement64_config("cars3d")
