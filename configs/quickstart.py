"""The embedded default: CL-Dis on procedural Shapes3D at 32x32, about 10
minutes on a 2-core CPU, no download.

  python -m cldis_jax.main --config configs/quickstart.py --workdir /tmp/cldis_quickstart

A 0.4M-parameter Diff-AE and a small beta-VAE train together on the
procedurally rendered Shapes3D-like scenes (floor, wall and object hue,
scale, shape, orientation). By the end, `samples/traverse_vae_*.png` has
separate axes for the object, floor and wall hue, and in
`samples/traverse_mu_s_*.png` the Diff-AE follows the distilled floor-hue axis;
shape, scale and orientation need longer runs. Compared with the full-size
configs it uses a higher learning rate, no dropout, a faster EMA and a
controller with a short warm-up and a larger integral gain, so that the closed
loop acts within the short run.
"""

from cldis_jax.config_lib import base_config


def get_config(arg=None):
  del arg
  config = base_config()
  config.model.image_size = 32
  config.model.latent_dim = 10  # d_v: one per factor we hope for (6) plus spares
  config.model.diffae.update(dict(
      base_channels=16, channel_mult=(1, 2, 2), enc_channel_mult=(1, 2, 2, 2),
      num_res_blocks=1, enc_num_res_blocks=1, attn_resolutions=(8,),
      embed_dim=64, z_dim=128, dropout=0.0))
  config.model.vae.update(dict(hidden_channels=32, hidden_dim=128))

  config.optim.update(dict(learning_rate=5e-4, warmup_steps=100, ema_decay=0.995))

  # The VAE's capacity opens to 0.94 * 4.3 = 4 nats as the diffusion branch
  # learns (diffusion_paced): beta rises while the VAE's KL runs ahead of it,
  # comes back and settles near 4, inside [1, 6] (docs/study.md).
  config.objective.controller.update(dict(
      beta_init=1.0, beta_min=1.0, beta_max=6.0, ki=0.02, kl_max=4.3, warmup_steps=200))

  config.data.name = "procedural/shapes3d"
  config.train.update(dict(batch_size=16, num_steps=2000, log_every=50,
                           checkpoint_every=500))
  config.samples.update(dict(every=1000, num_images=8))
  # `--mode=evaluate` at disentanglement_lib's sample sizes; fewer CTD sources
  # and frames than the default, to keep the CPU evaluation within minutes.
  config.evaluate.ctd.update(dict(num_sources=8, steps=4))

  # `--mode=navigate`: a narrow reconstructor, a small batch and a higher
  # learning rate than Voynov & Babenko's (1e-4 over 100k steps), so that
  # direction discovery finishes within minutes on a CPU. This short run's
  # z_sem is nearly two-dimensional (two principal axes hold 97% of its
  # variance), so we look for 4 directions, and decode from t = 0.8 T, where
  # the decoded pair depends most on z_sem.
  config.navigate.update(dict(num_directions=4, t_start=0.8, batch_size=16, num_steps=1500,
                              learning_rate=1e-3, reference_images=2048,
                              checkpoint_every=500))
  config.navigate.reconstructor.width = 16
  # `--mode=edit`: the quickstart's own DDIM step count.
  config.edit.update(dict(invert_steps=20, decode_steps=20))
  # `--mode=train_latent`: a small latent DDIM (6 layers of 512 instead of
  # Diff-AE's 10 of 2048) on the codes of 50,000 training images, with a
  # faster EMA for the short run; `--mode=sample` then draws new images.
  config.latent.update(dict(num_images=50_000, num_steps=3000, ema_decay=0.995,
                            log_every=100, checkpoint_every=1000))
  config.latent.net.update(dict(hidden_channels=512, num_layers=6))
  return config
