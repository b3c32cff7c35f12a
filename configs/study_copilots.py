"""The co-pilots study: for each of disentanglement_lib's six VAEs, does
CL-Dis's loop (mu_s) beat the co-pilot trained alone (its own means)? On the
quickstart setting (procedural Shapes3D, 32 px, 2,000 steps of 16).

  python -m cldis_jax.main --config configs/study_copilots.py --workdir /tmp/cldis_copilots \\
      --mode=study

Per co-pilot two rows: `<co-pilot>_alone`, trained alone at the third value
of Locatello et al.'s grid (beta 4, beta 4, gamma 30, lambda_od 5,
lambda_od 5, c_max 25: the lower middle of each grid, the same rule for
all), and `<co-pilot>_loop`, in the loop over its own range
(configs/copilots.py); `beta_vae_loop` is the quickstart itself, the
`cldis` row of configs/study.py, whose kept runs benchmarks/copilots_table.py
reads. Evaluated with disentanglement_lib's sample sizes for FactorVAE, MIG
and DCI. What the rows showed: docs/copilots.md.
"""

import os

from cldis_jax import copilots
from cldis_jax.config_lib import load_config, nested


def variants() -> dict:
  out = {}
  for kind, entry in copilots.TABLE.items():
    out[f"{kind}_alone"] = copilots.alone(kind, entry.grid[2])
    out[f"{kind}_loop"] = ({} if kind == "beta_vae" else
                           copilots.in_the_loop(kind))
  return out


def get_config(arg=None):
  if arg:
    raise ValueError(f"configs/study_copilots.py takes no argument, got {arg!r}")
  config = load_config(os.path.join(os.path.dirname(__file__), "quickstart.py"))
  config.samples.every = 0
  config.evaluate.metrics = ("factor_vae", "mig", "dci")
  # The question compares mu_s with the co-pilot's own means; the loop's
  # vae_mu says what the loop did to the co-pilot. (z_sem_pca would add
  # about 6 minutes of DCI to every loop run and answers nothing here.)
  config.evaluate.representations = ("mu_s", "vae_mu")
  config.study.variants = {name: nested(o) for name, o in variants().items()}
  config.study.seeds = (0, 1, 2)
  return config
