"""FFHQ at the official Diff-AE sizes: `--config configs/ffhq.py:RES`, RES in 64, 128, 256.

  python -m cldis_jax.main --config configs/ffhq.py:128 --mode=summary
  python -m cldis_jax.main --config configs/ffhq.py:64 --workdir /tmp/ffhq64 \
      --config.data.dir=/path/to/ffhq
  python -m cldis_jax.main --config configs/ffhq.py:64 --mode=data \
      --config.data.dir=/path/to/ffhq --workdir=/tmp/ffhq64

The data is a folder of FFHQ images (png / jpg, any size; resized and
centre-cropped to RES) with random horizontal flips, as in Diff-AE.

Widths, multipliers, attention resolutions, batch sizes, optimiser and sample
counts are those of phizaz/diffae `templates.py` (ffhq64_autoenc,
ffhq128_autoenc_130M, ffhq256_autoenc). The official runs used fp16
autocast; we compute in bfloat16 on accelerators
(`--config.model.dtype=float32` for full precision).

CL-Dis additions whose paper values are unknown (our choices, configurable):
the beta-VAE co-pilot runs at the same resolution with d_v = 32.
"""

from cldis_jax.config_lib import base_config

# resolution -> (base channels, UNet mult, encoder mult, global batch, total samples)
_OFFICIAL = {
    64: (64, (1, 2, 4, 8), (1, 2, 4, 8, 8), 128, 72_000_000),
    128: (128, (1, 1, 2, 3, 4), (1, 1, 2, 3, 4, 4), 128, 130_000_000),
    256: (128, (1, 1, 2, 2, 4, 4), (1, 1, 2, 2, 4, 4, 4), 64, 200_000_000),
}


def get_config(arg=None):
  resolution = int(arg) if arg else 128
  if resolution not in _OFFICIAL:
    raise ValueError(f"configs/ffhq.py: resolution {arg!r} is not one of "
                     f"{sorted(_OFFICIAL)}; use e.g. --config configs/ffhq.py:128")
  base_channels, mult, enc_mult, batch, samples = _OFFICIAL[resolution]

  config = base_config()
  config.model.image_size = resolution
  config.model.latent_dim = 32
  config.model.dtype = "bfloat16"
  config.model.diffae.base_channels = base_channels
  config.model.diffae.channel_mult = mult
  config.model.diffae.enc_channel_mult = enc_mult
  config.model.diffae.attn_resolutions = (16,)

  config.data.name = "folder"
  config.data.dir = ""  # --config.data.dir=/path/to/ffhq
  config.data.hflip = True

  config.train.update(dict(batch_size=batch, num_steps=samples // batch, log_every=500,
                           checkpoint_every=10_000))
  config.samples.every = 25_000
  return config
