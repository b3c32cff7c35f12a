"""The closed-loop study: CL-Dis variants against each branch trained alone,
on the quickstart setting (procedural Shapes3D, 32 px, 2,000 steps of 16).

  python -m cldis_jax.main --config configs/study.py --workdir /tmp/cldis_study --mode=study
  python -m cldis_jax.main --config configs/study.py:screen --workdir /tmp/cldis_screen --mode=study

Every run trains the quickstart config with the variant's overrides and one
of the seeds, then is evaluated with the same protocol. The default is
disentanglement_lib's full protocol for FactorVAE, MIG and DCI (the numbers
the study compares); `:screen` is a reduced protocol for screening, declared
as such in every output. Two processes can share a study on the 2-core
machine: add `--config.study.shard=0/2` to one and `1/2` to the other.

Each run is about 8 minutes of training on a 2-core CPU alone, plus 2-3
minutes (`:screen`) or 10-13 minutes (full) of evaluation, so pick variants
with `--config.study.only="('cldis', 'vae_alone')"`. What the variants
showed: docs/study.md.
"""

import os

from cldis_jax.config_lib import load_config, nested

# The quickstart's settings before the study changed them (2026-11-30): the
# `diffusion_feedback` law and the forward KL. The variants screened then
# keep them, so their runs stay valid rows next to the current default.
PREVIOUS = {"objective.controller.kind": "diffusion_feedback",
            "objective.controller.beta_max": 4.0, "objective.controller.ki": 0.005,
            "objective.controller.kl_max": 16.0, "objective.dt_direction": "forward"}
VAE_ALONE = {"objective.branches": ("vae",), "evaluate.representations": ("vae_mu",)}
DIFFAE_ALONE = {"objective.branches": ("diffae",), "objective.controller.kind": "constant",
                "evaluate.representations": ("z_sem_pca",)}
CONDITION_MU_S = {"model.condition": "mu_s", "objective.sample_condition": True}
PACED = {"objective.controller.kind": "diffusion_paced", "objective.controller.kl_max": 4.8}

VARIANTS = {
    # CL-Dis as configs/quickstart.py configures it: diffusion_paced, reverse KL.
    "cldis": {},
    # The same with the forward KL.
    "cldis_paced_forward": {"objective.dt_direction": "forward"},
    # The previous default and what was screened against it.
    "cldis_previous": dict(PREVIOUS),
    "cldis_open_loop": {**PREVIOUS, "objective.controller.kind": "constant"},
    "cldis_diffusion_capacity": {**PREVIOUS,
                                 "objective.controller.kind": "diffusion_capacity"},
    "cldis_pi_kl": {**PREVIOUS, "objective.controller.kind": "pi_kl"},
    "cldis_distillation_feedback": {**PREVIOUS,
                                    "objective.controller.kind": "distillation_feedback"},
    # The denoiser conditioned on the distilled code (a sample of it in training).
    "cldis_condition_mu_s": {**PREVIOUS, **CONDITION_MU_S},
    "cldis_condition_mu_s_capacity": {**PREVIOUS, **CONDITION_MU_S,
                                      "objective.controller.kind": "diffusion_capacity"},
    # The distillation link: its weight, and the VAE learning from it too.
    "cldis_w_dt_10": {**PREVIOUS, "objective.w_dt": 10.0},
    "cldis_mutual": {**PREVIOUS, "objective.mutual": True},
    # The student's leakage: a scale-free decorrelation of mu_s's dims; the
    # teacher's means fitted at their own scale; the head started at the prior.
    "cldis_condition_mu_s_decorrelate": {**PREVIOUS, **CONDITION_MU_S,
                                         "objective.w_decorrelate": 1.0},
    "cldis_decorrelate": {**PREVIOUS, "objective.w_decorrelate": 1.0},
    "cldis_mean": {**PREVIOUS, "objective.w_dt_mean": 1.0},
    # The reverse KL: the student cannot cover a teacher dim with a wide sigma_s.
    "cldis_reverse": {**PREVIOUS, "objective.dt_direction": "reverse"},
    "cldis_reverse_prior": {**PREVIOUS, "objective.dt_direction": "reverse",
                            "model.head_init": "prior"},
    # diffusion_paced at other settings: capacity scale, gain, student.
    "cldis_paced_mean": {**PREVIOUS, **PACED, "objective.controller.kl_max": 6.0,
                         "objective.w_dt_mean": 1.0},
    "cldis_paced_reverse_slow": {**PREVIOUS, **PACED, "objective.dt_direction": "reverse"},
    "cldis_paced_reverse_prior": {**PREVIOUS, **PACED, "objective.controller.ki": 0.02,
                                  "objective.dt_direction": "reverse",
                                  "model.head_init": "prior"},
    # The baselines: each branch alone, same steps, batch and data.
    "vae_alone": {**VAE_ALONE, "objective.controller.kind": "constant"},
    "vae_alone_pi_kl": {**VAE_ALONE, "objective.controller.kind": "pi_kl",
                        "objective.controller.beta_max": 4.0, "objective.controller.ki": 0.005},
    "diffae_alone": DIFFAE_ALONE,
}


def get_config(arg=None):
  config = load_config(os.path.join(os.path.dirname(__file__), "quickstart.py"))
  config.samples.every = 0  # picture grids are not what the study compares
  config.evaluate.metrics = ("factor_vae", "mig", "dci")
  config.evaluate.representations = ("mu_s", "vae_mu", "z_sem_pca")
  config.study.variants = {name: nested(o) for name, o in VARIANTS.items()}
  config.study.seeds = (0, 1, 2)
  if arg == "screen":
    config.evaluate.update(dict(num_train=1000, num_test=500, num_variance_estimate=5000,
                                reference_images=5000))
  elif arg:
    raise ValueError(f"configs/study.py takes no argument or 'screen', got {arg!r}")
  return config
