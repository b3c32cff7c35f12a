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
  # The latent DDIM as Diff-AE's celeba64d2c_autoenc_latent: batch 512,
  # 301M samples (the net and the rest: the defaults, its shared preset).
  config.latent.update(dict(batch_size=512, num_steps=587_891))
  return config
