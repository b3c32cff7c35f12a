"""Distances between sets of images, read by a measuring network.

- `gaussian_stats(features)`: (mean, covariance) of feature rows, float64,
  the covariance unbiased (numpy's `cov`, as pytorch-fid).
- `frechet_distance(a, b)`: the Fréchet distance between two Gaussians,
  ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), computed as
  pytorch-fid does (scipy's `sqrtm`, an eps offset on the diagonals when the
  product is singular, the real part). With Inception pool3 features this is
  FID; with the factor oracle's hidden layer, our offline stand-in.
- `precision_recall(real, fake)`: Kynkäänniemi et al.'s improved precision
  and recall (NeurIPS 2019): each set's manifold is the union of balls
  around its points reaching their k-th nearest neighbour (k = `NEAREST`);
  precision is the share of fake points inside the real manifold, recall
  the share of real points inside the fake one.
- `total_variation(a, b, size)`: half the L1 distance between the value
  histograms of two integer samples.
"""

import numpy as np
from scipy import linalg

NEAREST = 3  # Kynkäänniemi et al.'s k


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  features = np.asarray(features, np.float64)
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(a: tuple, b: tuple, eps: float = 1e-6) -> float:
  """Fréchet distance between Gaussians a = (mu, sigma) and b."""
  mu1, sigma1 = (np.atleast_1d(np.asarray(v, np.float64)) for v in a)
  mu2, sigma2 = (np.atleast_1d(np.asarray(v, np.float64)) for v in b)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"statistics of different sizes: {mu1.shape} {sigma1.shape} vs "
                     f"{mu2.shape} {sigma2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"sqrtm has an imaginary component of "
                       f"{np.max(np.abs(covmean.imag)):.3g}")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def total_variation(a, b, size: int) -> float:
  """TV distance between the histograms of integer values a and b in [0, size)."""
  pa = np.bincount(np.asarray(a, np.int64), minlength=size) / max(len(a), 1)
  pb = np.bincount(np.asarray(b, np.int64), minlength=size) / max(len(b), 1)
  return float(0.5 * np.abs(pa - pb).sum())


def precision_recall(real, fake, k: int = NEAREST, batch: int = 1000) -> dict[str, float]:
  """{"precision", "recall"} of feature rows `fake` against `real` (module doc)."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"precision/recall with k = {k} needs more than {k} points per set; "
                     f"got {len(real)} and {len(fake)}")
  return {"precision": _covered(fake, real, _radii(real, k, batch), batch),
          "recall": _covered(real, fake, _radii(fake, k, batch), batch)}


def _distances(a, b) -> np.ndarray:
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.sqrt(np.maximum(d, 0.0))


def _radii(x, k: int, batch: int) -> np.ndarray:
  """Each point's distance to its k-th nearest other point."""
  return np.concatenate([np.partition(_distances(x[i:i + batch], x), k, axis=1)[:, k]
                         for i in range(0, len(x), batch)])


def _covered(points, centres, radii, batch: int) -> float:
  """The share of `points` inside some ball (centre, radius)."""
  inside = [(_distances(points[i:i + batch], centres) <= radii[None, :]).any(axis=1)
            for i in range(0, len(points), batch)]
  return float(np.concatenate(inside).mean())
