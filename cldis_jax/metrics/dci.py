"""DCI disentanglement, completeness and informativeness (Eastwood & Williams
2018), disentanglement_lib's `evaluation/metrics/dci.py`.

One gradient-boosted tree classifier per factor on the raw codes; its
impurity importances form R[d, k]. This is the slowest metric by far (about
15 CPU-seconds per 10-valued factor at 10,000 points); the estimator is kept
as the library's for comparability (see `estimators.py`). The factors' fits
are independent and each has its own fixed seed, so they run in parallel
processes (one per core by default) with exactly the serial numbers.
"""

import concurrent.futures
import multiprocessing
import os
import sys

import numpy as np
import scipy.stats

from cldis_jax.metrics import estimators, protocol


def _fit_factor(codes_train, y_train, codes_test, y_test):
  """One factor's (importances [D], train accuracy, test accuracy)."""
  model = estimators.gradient_boosting().fit(codes_train, y_train)
  return (np.abs(model.feature_importances_), float(np.mean(model.predict(codes_train) == y_train)),
          float(np.mean(model.predict(codes_test) == y_test)))


def default_workers() -> int:
  """One per core; 1 where spawned processes cannot re-import the main module
  (code run from stdin or `python -c`)."""
  main_file = getattr(sys.modules.get("__main__"), "__file__", None)
  if main_file is not None and not os.path.exists(main_file):
    return 1
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def importance_matrix(codes_train, factors_train, codes_test, factors_test, workers: int = 0):
  """(R [D, K], train accuracy [K], test accuracy [K]). `workers` processes fit
  the factors (0: one per core; 1: in this process)."""
  num_factors = factors_train.shape[1]
  jobs = [(codes_train, factors_train[:, k], codes_test, factors_test[:, k])
          for k in range(num_factors)]
  workers = min(workers or default_workers(), num_factors)
  if workers <= 1:
    fits = [_fit_factor(*job) for job in jobs]
  else:  # spawned, not forked: the parent runs JAX's threads
    # A fit costs about one tree per class per stage: start the largest first.
    order = sorted(range(num_factors), key=lambda k: -len(np.unique(factors_train[:, k])))
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      futures = {k: pool.submit(_fit_factor, *jobs[k]) for k in order}
      fits = [futures[k].result() for k in range(num_factors)]
  importance = np.stack([f[0] for f in fits], axis=1)
  return importance, np.array([f[1] for f in fits]), np.array([f[2] for f in fits])


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


def dci(codes_train, factors_train, codes_test, factors_test, workers: int = 0) -> dict:
  codes_train, factors_train = protocol.check_codes_factors(
      codes_train, factors_train, "DCI", min_codes=2)
  codes_test, factors_test = protocol.check_codes_factors(
      codes_test, factors_test, "DCI", min_codes=2)
  if factors_train.shape[1] < 2:
    raise ValueError("DCI disentanglement needs at least 2 factors (entropy base K)")
  importance, train_acc, test_acc = importance_matrix(
      codes_train, factors_train, codes_test, factors_test, workers)
  d, c = disentanglement_completeness(importance)
  return {"disentanglement": d, "completeness": c,
          "informativeness_train": float(train_acc.mean()),
          "informativeness_test": float(test_acc.mean()),
          "importance_matrix": importance.tolist()}


def compute_dci(ground_truth, representation, random_state, *, num_train: int = 10_000,
                num_test: int = 5_000, batch_size: int = 16, workers: int = 0) -> dict:
  codes_train, factors_train = protocol.generate_batch_factor_code(
      ground_truth, representation, num_train, random_state, batch_size)
  codes_test, factors_test = protocol.generate_batch_factor_code(
      ground_truth, representation, num_test, random_state, batch_size)
  return dci(codes_train, factors_train, codes_test, factors_test, workers)
