"""Modularity and explicitness (Ridgeway & Mozer 2018), disentanglement_lib's
`modularity_explicitness.py` (google-research/disentanglement_lib).

Two deliberate departures, where the library crashes instead of answering:
- a constant code dimension has std 0; the library's standardisation makes
  NaNs and LogisticRegression raises. We leave such a column at 0 after
  centring, which is the same as leaving it out.
- a class present in only one of train/test makes the library's one-hot
  columns disagree with `predict_proba`'s. We binarise against the
  classifier's classes and average the per-class AUROC over the classes that
  occur in both labels (equal to sklearn's macro average when all occur).
"""

import numpy as np

from cldis_jax.metrics import estimators, info, protocol


def modularity(codes, factors, num_bins: int = 20) -> float:
  """Mean over codes of 1 - (sum of squared MI but the largest) /
  (largest * (K - 1)); 0 for a code that carries no information."""
  codes, factors = protocol.check_codes_factors(codes, factors, "modularity")
  if factors.shape[1] < 2:
    raise ValueError("modularity needs at least 2 factors")
  squared = info.mutual_info_matrix(info.histogram_discretize(codes, num_bins), factors)**2
  best = squared.max(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    delta = (squared.sum(axis=1) - best) / (best * (factors.shape[1] - 1))
  return float(np.mean(np.where(best == 0.0, 0.0, 1.0 - delta)))


def _macro_auroc(y, proba, classes) -> float:
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  onehot = y[:, None] == np.asarray(classes)[None, :]
  scores = [roc_auc_score(onehot[:, c], proba[:, c]) for c in range(len(classes))
            if 0 < onehot[:, c].sum() < len(y)]
  return float(np.mean(scores)) if scores else float("nan")


def explicitness(codes_train, factors_train, codes_test, factors_test,
                 solver: str = "lbfgs") -> dict:
  """Mean over factors of the macro AUROC of a logistic regression on the
  standardised codes (train mean and population std)."""
  codes_train, factors_train = protocol.check_codes_factors(
      codes_train, factors_train, "explicitness")
  codes_test, factors_test = protocol.check_codes_factors(
      codes_test, factors_test, "explicitness")
  mean, std = codes_train.mean(axis=0), codes_train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
  train, test = [], []
  with estimators.quiet():
    for k in range(factors_train.shape[1]):
      clf = estimators.logistic_regression(solver).fit(x_train, factors_train[:, k])
      train.append(_macro_auroc(factors_train[:, k], clf.predict_proba(x_train), clf.classes_))
      test.append(_macro_auroc(factors_test[:, k], clf.predict_proba(x_test), clf.classes_))
  return {"explicitness_score_train": float(np.mean(train)),
          "explicitness_score_test": float(np.mean(test))}


def compute_modularity_explicitness(ground_truth, representation, random_state, *,
                                    num_train: int = 10_000, num_test: int = 5_000,
                                    batch_size: int = 16, num_bins: int = 20,
                                    solver: str = "lbfgs") -> dict:
  codes_train, factors_train = protocol.generate_batch_factor_code(
      ground_truth, representation, num_train, random_state, batch_size)
  codes_test, factors_test = protocol.generate_batch_factor_code(
      ground_truth, representation, num_test, random_state, batch_size)
  scores = {"modularity_score": modularity(codes_train, factors_train, num_bins)}
  scores.update(explicitness(codes_train, factors_train, codes_test, factors_test, solver))
  return scores
