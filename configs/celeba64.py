"""CL-Dis on CelebA at 64x64 (the TAD / FID protocol of DisDiff and EncDiff).

  python -m cldis_jax.main --config configs/celeba64.py --workdir /tmp/cldis_celeba64 \
      --config.data.dir=/path/to/tensorflow_datasets

Reads TFDS `celeb_a` (its 40 attributes are kept for TAD), cropped the way
TAD's reference code does (data.celeba_crop = "tad"), with random horizontal
flips. d_v = 32: faces have more factors than the synthetic sets (our choice).
Recipe otherwise: config_lib.disentanglement64_config.
"""

from cldis_jax.config_lib import disentanglement64_config


def get_config(arg=None):
  del arg
  config = disentanglement64_config("tfds/celeb_a", latent_dim=32)
  config.data.hflip = True
  return config
