"""DCI disentanglement, completeness and informativeness (Eastwood & Williams
2018), disentanglement_lib's `evaluation/metrics/dci.py`.

One gradient-boosted tree classifier per factor on the raw codes; its
impurity importances form R[d, k]. This is the slowest metric by far (about
15 CPU-seconds per 10-valued factor at 10,000 points); the estimator is kept
as the library's for comparability (see `estimators.py`).
"""

import numpy as np
import scipy.stats

from cldis_jax.metrics import estimators, protocol


def importance_matrix(codes_train, factors_train, codes_test, factors_test):
  """(R [D, K], train accuracy [K], test accuracy [K])."""
  num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
  importance = np.zeros((num_codes, num_factors))
  train_acc, test_acc = np.zeros(num_factors), np.zeros(num_factors)
  for k in range(num_factors):
    model = estimators.gradient_boosting().fit(codes_train, factors_train[:, k])
    importance[:, k] = np.abs(model.feature_importances_)
    train_acc[k] = np.mean(model.predict(codes_train) == factors_train[:, k])
    test_acc[k] = np.mean(model.predict(codes_test) == factors_test[:, k])
  return importance, train_acc, test_acc


def disentanglement_completeness(importance: np.ndarray) -> tuple[float, float]:
  """From R [D, K]: importance-weighted 1 - H_K(row) and 1 - H_D(column)."""
  num_codes, num_factors = importance.shape
  per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=num_factors)
  per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=num_codes)
  total = importance.sum()
  if total == 0.0:
    code_weight = np.ones(num_codes) / num_codes
    factor_weight = np.ones(num_factors) / num_factors
  else:
    code_weight, factor_weight = importance.sum(1) / total, importance.sum(0) / total
  return float(np.sum(per_code * code_weight)), float(np.sum(per_factor * factor_weight))


def dci(codes_train, factors_train, codes_test, factors_test) -> dict:
  codes_train, factors_train = protocol.check_codes_factors(
      codes_train, factors_train, "DCI", min_codes=2)
  codes_test, factors_test = protocol.check_codes_factors(
      codes_test, factors_test, "DCI", min_codes=2)
  if factors_train.shape[1] < 2:
    raise ValueError("DCI disentanglement needs at least 2 factors (entropy base K)")
  importance, train_acc, test_acc = importance_matrix(
      codes_train, factors_train, codes_test, factors_test)
  d, c = disentanglement_completeness(importance)
  return {"disentanglement": d, "completeness": c,
          "informativeness_train": float(train_acc.mean()),
          "informativeness_test": float(test_acc.mean()),
          "importance_matrix": importance.tolist()}


def compute_dci(ground_truth, representation, random_state, *, num_train: int = 10_000,
                num_test: int = 5_000, batch_size: int = 16) -> dict:
  codes_train, factors_train = protocol.generate_batch_factor_code(
      ground_truth, representation, num_train, random_state, batch_size)
  codes_test, factors_test = protocol.generate_batch_factor_code(
      ground_truth, representation, num_test, random_state, batch_size)
  return dci(codes_train, factors_train, codes_test, factors_test)
