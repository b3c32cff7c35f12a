"""Partially labelled factors (ZeroDIM) on the quickstart: procedural Shapes3D
at 32x32, 1,000 of its 480,000 images labelled with floor, wall and object
hue, the rest of the scene in a 7-dim residual.

  python -m cldis_jax.main --config configs/shapes3d_labels.py --workdir /tmp/cldis_labels
  python -m cldis_jax.main --config configs/shapes3d_labels.py --workdir /tmp/cldis_labels \\
      --mode=edit --config.edit.directions=labels

The Diff-AE's semantic code becomes [floor | wall | object hue codes |
residual]: each hue code is its value's row of a fixed random table on a
labelled image and the classifier's soft mix of the rows on any other. `:geometry` labels
the harder factors instead (scale, shape, orientation). `:copilot` keeps the
beta-VAE co-pilot and the distillation running on the residual (CL-Dis on
what the labels leave). Same networks, steps and batch as the quickstart.
"""

import os

from cldis_jax.config_lib import load_config

FACTORS = {"hues": (("floor_hue", "wall_hue", "object_hue"), (10, 10, 10)),
           "geometry": (("scale", "shape", "orientation"), (8, 4, 15))}


def get_config(arg=None):
  config = load_config(os.path.join(os.path.dirname(__file__), "quickstart.py"))
  args = set(arg.split(",")) if arg else set()
  unknown = args - {"geometry", "copilot"}
  if unknown:
    raise ValueError(f"configs/shapes3d_labels.py takes 'geometry' and/or 'copilot', "
                     f"got {sorted(unknown)}")
  factors, sizes = FACTORS["geometry" if "geometry" in args else "hues"]
  # ZeroDIM's residual width (7) and loss weights, except where its settings
  # taught the Diff-AE nothing in 2,000 steps (docs/labels.md): four numbers
  # per factor in fixed random tables (ZeroDIM: one, learned), a labelled
  # batch as large as the full one and a 100x cross-entropy.
  config.model.labels.update(dict(factors=factors, sizes=sizes, factor_dim=4,
                                  residual_dim=7))
  config.supervision.update(dict(
      num_labelled=1000, batch_size=16, w_classify=0.1, table_learning_rate=0.0,
      entropy_warmup_steps=200))  # entropy after 10% of the steps, as ZeroDIM
  if "copilot" not in args:  # the Diff-AE alone with the labels
    config.objective.branches = ("diffae",)
    config.objective.controller.kind = "constant"
  config.evaluate.metrics = ("labels", "mig", "dci")
  config.evaluate.representations = ("z_sem_pca",) if "copilot" not in args else (
      "mu_s", "z_sem_pca")
  config.edit.directions = "labels"
  return config
