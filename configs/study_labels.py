"""The partial-labels study: how many labels the Diff-AE code needs, and
whether the CL-Dis co-pilot on the residual helps, on the quickstart setting
(procedural Shapes3D, 32 px, 2,000 steps of 16 images plus 16 labelled ones).

  python -m cldis_jax.main --config configs/study_labels.py --workdir /tmp/cldis_labels_study \\
      --mode=study

Every run trains configs/shapes3d_labels.py with the variant's overrides and
one of the seeds, then is evaluated with disentanglement_lib's sample sizes
and ZeroDIM's protocol (the `labels` column: DCI, MIG and SAP of the factor
codes, classifier accuracy, the residual's leakage, edit accuracy). The
unsupervised rows (CL-Dis and each branch alone) are the closed-loop study's
(configs/study.py). What the variants showed: docs/labels.md.
"""

import os

from cldis_jax.config_lib import load_config, nested

COPILOT = {"objective.branches": ("diffae", "vae"),
           "objective.controller.kind": "diffusion_paced",
           "evaluate.representations": ("mu_s", "z_sem_pca")}

VARIANTS = {
    # Floor, wall and object hue labelled on this many images.
    "labels_100": {"supervision.num_labelled": 100},
    "labels_1000": {},
    "labels_all": {"supervision.num_labelled": 480_000},
    # The beta-VAE co-pilot and the distillation on the 7-dim residual.
    "labels_1000_copilot": COPILOT,
    # The harder factors labelled instead; the hues are left to the residual.
    "geometry_1000": {"model.labels.factors": ("scale", "shape", "orientation"),
                      "model.labels.sizes": (8, 4, 15)},
    # Screening (docs/labels.md): ZeroDIM's own settings (one learned number
    # per factor, a labelled batch of 2, cross-entropy 1e-3), and three of
    # the base config's departures from them undone one at a time.
    "zerodim": {"model.labels.factor_dim": 1, "supervision.table_learning_rate": 1e-2,
                "supervision.batch_size": 0, "supervision.w_classify": 1e-3},
    "labels_1000_learned_tables": {"supervision.table_learning_rate": 1e-2},
    "labels_1000_dim1": {"model.labels.factor_dim": 1},
    "labels_1000_b2": {"supervision.batch_size": 0},
}


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/study_labels.py takes no argument, got {arg!r}")
  config = load_config(os.path.join(os.path.dirname(__file__), "shapes3d_labels.py"))
  config.samples.every = 0
  config.study.variants = {name: nested(o) for name, o in VARIANTS.items()}
  config.study.seeds = (0, 1, 2)
  return config
