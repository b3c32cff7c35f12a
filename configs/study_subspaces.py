"""The subspaces study: does splitting z_sem into region blocks with a swap
loss and an independence loss make region swaps work, and which independence
measure does better? On the quickstart setting (procedural Shapes3D, 32 px,
2,000 steps of 16 images).

  python -m cldis_jax.main --config configs/study_subspaces.py --workdir /tmp/cldis_swap_study \\
      --mode=study

Every run trains configs/shapes3d_subspaces.py with the variant's overrides
and one of the seeds, then is evaluated with disentanglement_lib's sample
sizes and the swap measures (the `subspaces` column). `no_subspaces` is
CL-Dis with the same 24-dim z_sem and no block: its swaps are scored on the
same dims for comparison. What the variants showed: docs/subspaces.md.
"""

import os

from cldis_jax.config_lib import load_config, nested

VARIANTS = {
    "no_subspaces": {"subspaces.w_swap": 0.0, "subspaces.independence": "none"},
    "hsic": {},
    "cross_covariance": {"subspaces.independence": "cross_covariance"},
    "hsic_no_swap": {"subspaces.w_swap": 0.0},
    "cross_covariance_no_swap": {"subspaces.independence": "cross_covariance",
                                 "subspaces.w_swap": 0.0},
    "swap_only": {"subspaces.independence": "none"},
    # The swap loss is also met by a decoder that ignores the blocks; the
    # match term asks the swap to bring the donor's pixels.
    "hsic_match": {"subspaces.w_match": 1.0},
}


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/study_subspaces.py takes no argument, got {arg!r}")
  config = load_config(os.path.join(os.path.dirname(__file__), "shapes3d_subspaces.py"))
  config.samples.every = 0
  config.study.variants = {name: nested(o) for name, o in VARIANTS.items()}
  config.study.seeds = (0, 1, 2)
  return config
