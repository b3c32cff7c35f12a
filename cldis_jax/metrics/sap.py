"""SAP score (Kumar et al. 2018), disentanglement_lib's `sap_score.py` with
the studies' discrete factors (google-research/disentanglement_lib).

S[d, k] = test accuracy of a balanced `LinearSVC(C=0.01)` that predicts
factor k from the single raw code d; SAP = mean over factors of the gap
between the two best codes. A 1-D linear classifier cannot isolate the
middle values of a many-valued factor, so even perfect codes score low in
absolute terms (about 0.2 for 10-valued factors).
"""

import numpy as np

from cldis_jax.metrics import estimators, protocol


def score_matrix(codes_train, factors_train, codes_test, factors_test, dual=True):
  num_codes, num_factors = codes_train.shape[1], factors_train.shape[1]
  scores = np.zeros((num_codes, num_factors))
  with estimators.quiet():
    for d in range(num_codes):
      for k in range(num_factors):
        clf = estimators.linear_svc(dual).fit(codes_train[:, d:d + 1], factors_train[:, k])
        scores[d, k] = np.mean(clf.predict(codes_test[:, d:d + 1]) == factors_test[:, k])
  return scores


def sap(codes_train, factors_train, codes_test, factors_test, dual=True) -> dict:
  codes_train, factors_train = protocol.check_codes_factors(
      codes_train, factors_train, "SAP", min_codes=2)
  codes_test, factors_test = protocol.check_codes_factors(
      codes_test, factors_test, "SAP", min_codes=2)
  scores = np.sort(score_matrix(codes_train, factors_train, codes_test, factors_test, dual),
                   axis=0)
  return {"SAP_score": float(np.mean(scores[-1] - scores[-2]))}


def compute_sap(ground_truth, representation, random_state, *, num_train: int = 10_000,
                num_test: int = 5_000, batch_size: int = 16, dual=True) -> dict:
  codes_train, factors_train = protocol.generate_batch_factor_code(
      ground_truth, representation, num_train, random_state, batch_size)
  codes_test, factors_test = protocol.generate_batch_factor_code(
      ground_truth, representation, num_test, random_state, batch_size)
  return sap(codes_train, factors_train, codes_test, factors_test, dual)
