"""FactorVAE score (Kim & Mnih 2018), disentanglement_lib's `factor_vae.py`
(google-research/disentanglement_lib).

A vote fixes one factor over a batch of 64, and names the active code with
the smallest variance relative to its global variance; a majority-vote
classifier maps codes to factors; the score is its accuracy on fresh votes.

The random draws happen vote by vote in the library's order; the codes of
all votes are then looked up at once and the variances and arg-mins are
vectorised (the library loops over 15,000 votes in Python). Quirks kept:
the arg-min indexes the list of *active* codes while the vote matrix has one
column per code (accuracies are unaffected), and `num_active_dims` reports
the total number of codes, as the library does; `num_active` is the real
count.
"""

import numpy as np


def prune_dims(variances: np.ndarray, threshold: float = 0.05) -> np.ndarray:
  """Active codes: global std >= threshold."""
  return np.sqrt(variances) >= threshold


def votes(batch_codes: np.ndarray, fixed_factor: np.ndarray, global_variances: np.ndarray,
          active: np.ndarray, num_factors: int) -> np.ndarray:
  """batch_codes [V, B, D] (factor fixed_factor[v] shared in vote v) ->
  vote counts [num_factors, D] (column = position among the active codes)."""
  local = np.var(batch_codes, axis=1, ddof=1)
  argmin = np.argmin(local[:, active] / global_variances[active], axis=1)
  counts = np.zeros((num_factors, len(global_variances)), np.int64)
  np.add.at(counts, (fixed_factor, argmin), 1)
  return counts


def accuracy(counts: np.ndarray, classifier: np.ndarray) -> float:
  return float(counts[classifier, np.arange(counts.shape[1])].sum() / counts.sum())


def _draw_votes(ground_truth, batch_size, num_points, random_state):
  fixed, indices = np.zeros(num_points, np.int64), []
  for v in range(num_points):
    fixed[v] = random_state.randint(ground_truth.num_factors)
    factors = ground_truth.sample_factors(batch_size, random_state)
    factors[:, fixed[v]] = factors[0, fixed[v]]
    indices.append(ground_truth.indices_of(factors))
  return fixed, np.stack(indices)


def compute_factor_vae(ground_truth, representation, random_state, *, batch_size: int = 64,
                       num_train: int = 10_000, num_eval: int = 5_000,
                       num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                       ) -> dict:
  _, indices = ground_truth.sample(num_variance_estimate, random_state)
  global_variances = np.var(np.asarray(representation(indices)), axis=0, ddof=1)
  active = prune_dims(global_variances, prune_threshold)
  num_codes = len(global_variances)
  if not active.any():
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0,
            "num_active": 0}

  def vote_counts(num_points):
    fixed, idx = _draw_votes(ground_truth, batch_size, num_points, random_state)
    codes = np.asarray(representation(idx.reshape(-1))).reshape(idx.shape + (num_codes,))
    return votes(codes, fixed, global_variances, active, ground_truth.num_factors)

  train_votes = vote_counts(num_train)
  classifier = np.argmax(train_votes, axis=0)
  eval_votes = vote_counts(num_eval)
  return {"train_accuracy": accuracy(train_votes, classifier),
          "eval_accuracy": accuracy(eval_votes, classifier),
          "num_active_dims": num_codes, "num_active": int(active.sum())}
