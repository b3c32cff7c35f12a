"""Any of disentanglement_lib's six VAEs as the co-pilot, on the quickstart
setting (procedural Shapes3D, 32 px, 2,000 steps of 16).

  python -m cldis_jax.main --config configs/copilots.py:factor_vae --workdir /tmp/cldis_factor_vae
  python -m cldis_jax.main --config configs/copilots.py:factor_vae_30 --workdir /tmp/factor_vae_30

`<co-pilot>` (beta_vae, beta_tcvae, factor_vae, dip_vae_i, dip_vae_ii,
annealed_vae): CL-Dis with that co-pilot in the feedback loop. The
controller moves the co-pilot's own pressure over its range
(cldis_jax.copilots.TABLE) with the quickstart's gains per unit of range;
`beta_vae` is the quickstart itself.

`<co-pilot>_<value>`, a value of Locatello et al.'s grid (e.g. beta_tcvae_6,
dip_vae_ii_20, annealed_vae_25): the co-pilot trained alone at that value,
with no Diff-AE, scored on its own means: the library's model in this
pipeline. docs/copilots.md.
"""

import os

from cldis_jax import copilots
from cldis_jax.config_lib import apply_overrides, load_config, nested


def get_config(arg=None):
  config = load_config(os.path.join(os.path.dirname(__file__), "quickstart.py"))
  if not arg:
    raise ValueError("configs/copilots.py needs a preset: configs/copilots.py:<name>; valid: "
                     + ", ".join(copilots.preset_names()))
  if arg == "beta_vae":
    return config
  return apply_overrides(config, nested(copilots.preset(arg)),
                         f"configs/copilots.py:{arg}")
