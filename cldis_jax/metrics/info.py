"""Histogram discretisation and plug-in mutual information, as in
disentanglement_lib's `utils.py` (google-research/disentanglement_lib)."""

import numpy as np


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
  """Per code column: `np.digitize` against the first `num_bins` of
  `np.histogram`'s equal-width edges (bins 1..num_bins; the maximum lands in
  the last bin; a value on an interior edge goes to the upper bin).

  The library keeps the input dtype; we return int64 bin ids (same values).
  """
  codes = np.asarray(codes)
  out = np.zeros(codes.shape, np.int64)
  for d in range(codes.shape[1]):
    edges = np.histogram(codes[:, d], num_bins)[1][:-1]
    out[:, d] = np.digitize(codes[:, d], edges)
  return out


def _labels(x: np.ndarray) -> tuple[np.ndarray, int]:
  values, inverse = np.unique(x, return_inverse=True)
  return inverse.reshape(-1), len(values)


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
  """`sklearn.metrics.mutual_info_score(a, b)`: plug-in MI in nats."""
  a, na = _labels(a)
  b, nb = _labels(b)
  joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).astype(np.float64)
  p = joint / joint.sum()
  pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
  nz = p > 0
  return float(max(np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz])), 0.0))


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """[D, K] MI (nats) between each discretised code column and each factor."""
  return np.array([[mutual_info(discrete_codes[:, d], factors[:, k])
                    for k in range(factors.shape[1])]
                   for d in range(discrete_codes.shape[1])])


def entropy(factors: np.ndarray) -> np.ndarray:
  """[K] plug-in entropies in nats (`mutual_info_score(f, f)`)."""
  return np.array([mutual_info(factors[:, k], factors[:, k])
                   for k in range(factors.shape[1])])
