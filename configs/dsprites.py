"""CL-Dis on dSprites (737,280 binary 64x64 images, 5 factors), one channel.

  python -m cldis_jax.main --config configs/dsprites.py --workdir /tmp/cldis_dsprites \
      --config.data.dir=/path/to/tensorflow_datasets

Reads the TFDS `dsprites` dataset; `--config.data.name=procedural/dsprites`
trains on the embedded renderer instead (no download). The Bernoulli
likelihood suits the binary images. Recipe: config_lib.disentanglement64_config.
"""

from cldis_jax.config_lib import disentanglement64_config


def get_config(arg=None):
  del arg
  return disentanglement64_config("tfds/dsprites", channels=1)
