"""A tiny model for tests and smoke runs on a CPU (16x16 images, ~70K parameters).

  python -m cldis_jax.main --config configs/test.py --mode=summary
"""

from cldis_jax.config_lib import base_config


def get_config(arg=None):
  del arg
  config = base_config()
  config.model.image_size = 16
  config.model.latent_dim = 4
  config.model.diffae.update(dict(
      base_channels=8, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2),
      num_res_blocks=1, enc_num_res_blocks=1, attn_resolutions=(8,),
      embed_dim=32, z_dim=32))
  config.model.vae.update(dict(hidden_channels=8, hidden_dim=32))
  config.train.batch_size = 4
  config.train.num_steps = 10
  config.evaluate.update(dict(  # tiny samples: exercises every metric, not comparable
      num_train=200, num_test=100, num_variance_estimate=200, group_batch_size=8,
      reference_images=64, encode_batch=32))
  config.evaluate.ctd.update(dict(num_sources=2, steps=2, levels=2, iterations=20))
  config.evaluate.probe.update(dict(steps=5, batch_size=8, width=4, test_images=32))
  config.evaluate.autoencoding.update(dict(images=4, noises=2, bins=3))
  config.navigate.update(dict(batch_size=4, num_steps=6, log_every=3, checkpoint_every=3,
                              reference_images=64, accuracy_batches=2, traversal_steps=3))
  config.navigate.reconstructor.update(dict(width=4, stage_sizes=(1, 1)))
  config.edit.update(dict(dataset_images=2, num_strengths=3, invert_steps=4, decode_steps=4,
                          interpolation_steps=3))
  config.latent.update(dict(num_images=64, batch_size=8, num_steps=6, log_every=3,
                            checkpoint_every=3))
  config.latent.net.update(dict(hidden_channels=16, num_layers=3, time_embed_channels=8))
  config.sample.update(dict(num_images=6, latent_steps=4, image_steps=4, batch_size=4,
                            edit_images=2, quality_images=8))
  return config
