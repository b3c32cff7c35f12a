"""Mutual Information Gap (Chen et al. 2018), disentanglement_lib's `mig.py`
(google-research/disentanglement_lib)."""

import numpy as np

from cldis_jax.metrics import info, protocol


def mig(codes, factors, num_bins: int = 20) -> dict:
  """codes [N, D], factors [N, K] -> {"discrete_mig", "per_factor"}.

  Each factor's gap between its two most informative (20-bin discretised)
  codes, over its entropy, averaged over factors; MI in nats.
  """
  codes, factors = protocol.check_codes_factors(codes, factors, "MIG", min_codes=2)
  m = info.mutual_info_matrix(info.histogram_discretize(codes, num_bins), factors)
  top = np.sort(m, axis=0)[::-1]
  gaps = (top[0] - top[1]) / info.entropy(factors)
  return {"discrete_mig": float(np.mean(gaps)), "per_factor": gaps.tolist()}


def compute_mig(ground_truth, representation, random_state, *, num_train: int = 10_000,
                batch_size: int = 16, num_bins: int = 20) -> dict:
  codes, factors = protocol.generate_batch_factor_code(
      ground_truth, representation, num_train, random_state, batch_size)
  return mig(codes, factors, num_bins)
