"""beta-VAE score (Higgins et al. 2017), disentanglement_lib's `beta_vae.py`
(google-research/disentanglement_lib, `evaluation/metrics/beta_vae.py`).

An example fixes one factor across 64 pairs; its feature is the mean |z1 - z2|
per code, its label the fixed factor. A logistic regression (see
`estimators.py` for the solver) is trained on 10,000 examples and scored on
5,000 fresh ones. Draws happen example by example in the library's order; the
lookups and features are vectorised.
"""

import numpy as np

from cldis_jax.metrics import estimators


def _draw_examples(ground_truth, batch_size, num_points, random_state):
  labels, first, second = np.zeros(num_points, np.int64), [], []
  for i in range(num_points):
    labels[i] = random_state.randint(low=0, high=ground_truth.num_factors)
    factors1 = ground_truth.sample_factors(batch_size, random_state)
    factors2 = ground_truth.sample_factors(batch_size, random_state)
    factors2[:, labels[i]] = factors1[:, labels[i]]
    first.append(ground_truth.indices_of(factors1))
    second.append(ground_truth.indices_of(factors2))
  return labels, np.stack(first), np.stack(second)


def features(codes1: np.ndarray, codes2: np.ndarray) -> np.ndarray:
  """[E, B, D] pairs -> [E, D] mean absolute differences."""
  return np.mean(np.abs(codes1 - codes2), axis=1)


def compute_beta_vae(ground_truth, representation, random_state, *, batch_size: int = 64,
                     num_train: int = 10_000, num_eval: int = 5_000,
                     solver: str = "lbfgs") -> dict:
  def examples(num_points):
    labels, first, second = _draw_examples(ground_truth, batch_size, num_points, random_state)
    lookup = lambda idx: np.asarray(representation(idx.reshape(-1))).reshape(
        idx.shape + (-1,))
    return features(lookup(first), lookup(second)), labels

  train_x, train_y = examples(num_train)
  with estimators.quiet():
    # The library hands the metric's RandomState to the classifier.
    model = estimators.logistic_regression(solver, random_state).fit(train_x, train_y)
  train_accuracy = float(np.mean(model.predict(train_x) == train_y))
  eval_x, eval_y = examples(num_eval)
  return {"train_accuracy": train_accuracy,
          "eval_accuracy": float(np.mean(model.predict(eval_x) == eval_y))}
