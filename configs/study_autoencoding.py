"""Does the semantic code carry the image? The denoiser's training recipe
(prediction target, timestep weights, timestep draw, code dropout) on the
quickstart setting (procedural Shapes3D, 32 px, batch 16), judged by the
`autoencoding` column: images decoded from their own code with fresh noise,
read by the factor oracle (docs/autoencoding.md).

  python -m cldis_jax.main --config configs/study_autoencoding.py --workdir /tmp/ae_study --mode=study
  python -m cldis_jax.main --config configs/study_autoencoding.py:steps=4000 --workdir /tmp/ae_4k --mode=study

The argument `steps=N` trains N steps instead of the quickstart's 2,000 (2x
and 5x budgets: 4000, 10000); pick variants with
`--config.study.only="('eps', 'v')"`. Each run is the quickstart config with
the variant's overrides and one of three seeds.
"""

import os

from cldis_jax.config_lib import load_config, nested

V_WEAK_DT = {"diffusion.prediction": "v", "objective.w_dt": 0.02}
WIDE = {**V_WEAK_DT, "model.diffae.enc_channel_mult": (1, 2, 4, 8)}
WIDE_FLATTEN = {**WIDE, "model.diffae.enc_pool": "flatten"}
FLATTEN = {**V_WEAK_DT, "model.diffae.enc_pool": "flatten"}

VARIANTS = {
    # Diff-AE's recipe (the quickstart's today): eps, its plain MSE, t uniform.
    "eps": {},
    # Targets that raise the high-noise steps' weight: v (about 1,300x eps's
    # share at t >= 758) and x0 (about 40,000x).
    "v": {"diffusion.prediction": "v"},
    "x0": {"diffusion.prediction": "x0"},
    # Half the timesteps drawn from t >= 700, where the hue must come from the code.
    "v_high": {"diffusion.prediction": "v", "diffusion.timesteps": "high"},
    "eps_high": {"diffusion.timesteps": "high"},
    # Weights that only lower the low-noise steps (expected not to help).
    "eps_min_snr": {"diffusion.loss_weight": "min_snr"},
    "eps_p2": {"diffusion.loss_weight": "p2"},
    # The x0-space weight max(SNR, 1) with the eps target; min-SNR on v.
    "eps_truncated_snr": {"diffusion.loss_weight": "truncated_snr"},
    "v_min_snr": {"diffusion.prediction": "v", "diffusion.loss_weight": "min_snr"},
    # A null code for a tenth of the images; decoded with guidance 2.
    "v_dropout_guided": {"diffusion.prediction": "v", "objective.code_dropout": 0.1,
                         "edit.guidance": 2.0},
    # Half of each image's U-Net skips zeroed in training, so that the decoder
    # half must take the geometry from the code (Skip Dropout).
    "v_skip_dropout": {"diffusion.prediction": "v", "model.diffae.skip_dropout": 0.5},
    # At w_dt = 1 the Diff-AE's gradient norm is about 140x the Diff-AE
    # alone's (grad_norm_diffae in the logs: L_dt reaches the encoder); at
    # 0.02 the two losses shape the encoder about equally.
    "v_weak_dt": V_WEAK_DT,
    # The quickstart's encoder pools 32 channels into the code; widths
    # 16/32/64/128 pool 128 (a linear probe of raw pixels reads every factor,
    # one of the quickstart's trained code reads no geometry).
    "v_weak_dt_wide": WIDE,
    # The same, with the encoder's last 4x4 map read whole (flatten, dense)
    # instead of averaged: where things are reaches the code directly.
    "v_weak_dt_wide_flatten": WIDE_FLATTEN,
    # The flatten head on the quickstart's narrow encoder (a 4x4x32 map): is
    # the width needed, or only the reading of where things are?
    "v_weak_dt_flatten": FLATTEN,
    # The same at twice the quickstart's learning rate (all branches): does
    # the decoder learn to read the code faster?
    "v_weak_dt_flatten_lr1e3": {**FLATTEN, "optim.learning_rate": 1e-3},
    # The same with a null code for a tenth of the images, so that decodes can
    # be guided (--config.edit.guidance=W at evaluation): does guidance pin
    # the near-miss hues and sizes once the code holds them?
    "v_weak_dt_flatten_dropout": {**FLATTEN, "objective.code_dropout": 0.1},
    # The same with half the timesteps drawn from t >= 700, where the hue must
    # come from the code: now that the code is read, does more training there
    # pin the near-miss hues and sizes?
    "v_weak_dt_flatten_high": {**FLATTEN, "diffusion.timesteps": "high"},
    # The same with the learning rate decayed along a cosine to 0 at the last
    # step: twice the rate hurt by 4,000 steps; is the steady rate's noise
    # what keeps the hues one class off?
    "v_weak_dt_flatten_cosine": {**FLATTEN, "optim.schedule": "cosine"},
    # The same with a shift read from the code in every UNet block besides
    # Diff-AE's scale (FiLM): the blocks' group norms take each channel's mean
    # out, and the scale alone can put a hue back only through the time
    # embedding's shift. A direct path for what the code says?
    "v_weak_dt_flatten_film": {**FLATTEN, "model.diffae.cond_shift": True},
    # A diagnostic, not a recipe: can the denoiser draw every factor from a
    # code that holds it? Every image labelled with all six factors (the
    # ZeroDIM code of configs/shapes3d_labels.py: fixed random table rows,
    # four numbers per factor), the Diff-AE alone. Decodes from fresh noise
    # then fail only where the denoiser cannot draw from the code (or the
    # classifiers, whose accuracy the labels column reports, misread).
    "v_oracle_code": {
        "diffusion.prediction": "v",
        "model.labels.factors": ("floor_hue", "wall_hue", "object_hue", "scale", "shape",
                                 "orientation"),
        "model.labels.sizes": (10, 10, 10, 8, 4, 15),
        "model.labels.factor_dim": 4, "model.labels.residual_dim": 7,
        "supervision.num_labelled": 480_000, "supervision.batch_size": 16,
        "supervision.w_classify": 0.1, "supervision.table_learning_rate": 0.0,
        "supervision.entropy_warmup_steps": 200,
        "objective.branches": ("diffae",), "objective.controller.kind": "constant",
        "evaluate.metrics": ("autoencoding", "labels"),
        "evaluate.representations": ("z_sem_pca",)},
}


def get_config(arg=None):
  config = load_config(os.path.join(os.path.dirname(__file__), "quickstart.py"))
  config.samples.every = 0
  config.evaluate.metrics = ("autoencoding", "factor_vae", "mig")
  config.evaluate.representations = ("mu_s", "vae_mu")
  config.evaluate.update(dict(num_train=1000, num_test=500, num_variance_estimate=5000,
                              reference_images=5000))
  config.evaluate.probe.steps = 2000
  config.study.variants = {name: nested(o) for name, o in VARIANTS.items()}
  config.study.seeds = (0, 1, 2)
  if arg and arg.startswith("steps="):
    config.train.num_steps = int(arg.split("=", 1)[1])
  elif arg:
    raise ValueError(f"configs/study_autoencoding.py takes no argument or 'steps=N', got {arg!r}")
  return config
