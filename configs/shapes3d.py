"""CL-Dis on DeepMind Shapes3D (480,000 images, 6 factors) at 64x64.

  python -m cldis_jax.main --config configs/shapes3d.py --workdir gs://BUCKET/cldis/shapes3d \
      --config.data.dir=gs://BUCKET/tensorflow_datasets

Reads the TFDS `shapes3d` dataset (prepare it once with `tfds build shapes3d`,
which needs TensorFlow). `--config.data.name=procedural/shapes3d` trains on the
embedded renderer of the same factors instead, with no download. The recipe
(networks, batch, steps) is ours: see config_lib.disentanglement64_config.
"""

from cldis_jax.config_lib import disentanglement64_config


def get_config(arg=None):
  del arg
  return disentanglement64_config("tfds/shapes3d")
