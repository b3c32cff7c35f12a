"""TAD, Total AUROC Difference (Yeats et al., NashAE, ECCV 2022), for
attribute-labelled data such as CelebA, as DisDiff and EncDiff compute it.

For attribute i and latent j, A[i, j] is the direction-free AUROC of latent j
alone as a score for y_i. An attribute is *captured* when its best AUROC is
>= 0.75 and no other attribute explains more than 0.2 of its entropy; TAD is
the *sum* over captured attributes of (best - second best AUROC).

Variants (`VARIANTS`), which change the number, so always report which:
- "grid11": DisDiff / EncDiff's code: an 11-threshold grid (step 0.1) over
  each latent's [min, max], right-endpoint step-rule area after sorting FPR
  and TPR separately, and latents with max - min <= 0.2 fixed at 0.5. Use it
  to compare with DisDiff / EncDiff tables.
- "grid101": the NashAE original, the same with 101 thresholds (step 0.01).
- "exact": exact AUROC (sklearn's `roc_auc_score`, ties averaged), no range
  filter; scale-invariant (InfoDiffusion computes it this way).
"""

import numpy as np
import scipy.stats

from cldis_jax import errors

VARIANTS = ("grid11", "grid101", "exact")


def exact_auroc(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[N, D] scores, [N, A] binary labels -> [A, D] AUROC of each latent
  (Mann-Whitney with average ranks for ties, = roc_auc_score)."""
  ranks = scipy.stats.rankdata(codes, axis=0)
  pos = labels.sum(axis=0).astype(np.float64)
  neg = len(labels) - pos
  with np.errstate(divide="ignore", invalid="ignore"):
    return (labels.T.astype(np.float64) @ ranks - (pos * (pos + 1) / 2)[:, None]) / (
        pos * neg)[:, None]


def grid_auroc(codes: np.ndarray, labels: np.ndarray, num_thresholds: int,
               lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """NashAE's threshold-grid AUROC for both directions: ([A, D] for "z >= thr"
  predicting 1, [A, D] for "z < thr"). Thresholds t * (hi - lo) + lo, float32
  as in the torch code."""
  steps = np.arange(num_thresholds, dtype=np.float32) / np.float32(num_thresholds - 1)
  codes = codes.astype(np.float32)
  thr = steps[None, :] * (hi - lo).astype(np.float32)[:, None] + lo.astype(np.float32)[:, None]
  pred = (codes[:, :, None] >= thr[None]).astype(np.float64)  # [N, D, T]
  y = labels.astype(np.float64)
  pos, neg = y.sum(0), len(y) - y.sum(0)
  tp = np.einsum("na,ndt->adt", y, pred)
  fp = np.einsum("na,ndt->adt", 1.0 - y, pred)
  with np.errstate(divide="ignore", invalid="ignore"):
    def area(tp, fp):
      tpr = np.sort(tp / pos[:, None, None], axis=-1)
      fpr = np.sort(fp / neg[:, None, None], axis=-1)
      return np.sum(tpr[..., 1:] * np.diff(fpr, axis=-1), axis=-1)
    return (area(tp, fp), area(pos[:, None, None] - tp, neg[:, None, None] - fp))


def auroc_matrix(codes, labels, variant: str = "grid11", range_min: float = 0.2,
                 lo=None, hi=None) -> np.ndarray:
  """[A, D] direction-free AUROCs in the given variant. `lo` / `hi` override
  the per-latent range of the grid (NashAE takes it from a VAE's mean)."""
  if variant == "exact":
    a = exact_auroc(codes, labels)
    return np.maximum(a, 1.0 - a)
  if variant not in VARIANTS:
    raise errors.ConfigError(f"TAD variant {variant!r} is not one of {VARIANTS}")
  lo = codes.min(axis=0) if lo is None else np.asarray(lo)
  hi = codes.max(axis=0) if hi is None else np.asarray(hi)
  positive, negative = grid_auroc(codes, labels, 11 if variant == "grid11" else 101, lo, hi)
  a = np.maximum(positive, negative)
  return np.where((hi - lo > range_min)[None, :], a, 0.5)


def label_entropy_reduction(labels: np.ndarray) -> np.ndarray:
  """[A]: max over other attributes j of I(y_i; y_j) / H(y_i) (plug-in, nats);
  NaN for an attribute that never or always occurs."""
  y = labels.astype(np.float64)
  n = len(y)
  p1 = y.mean(0)
  cells = [(1 - y, 1 - y, 1 - p1, 1 - p1), (1 - y, y, 1 - p1, p1),
           (y, 1 - y, p1, 1 - p1), (y, y, p1, p1)]
  mi = np.zeros((y.shape[1], y.shape[1]))
  for a, b, pa, pb in cells:
    joint = a.T @ b / n
    denom = pa[:, None] * pb[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
      mi += np.where((joint > 0) & (denom > 0), joint * np.log(joint / denom), 0.0)
  entropy = np.diag(mi).copy()
  off = mi * (1 - np.eye(len(mi)))
  with np.errstate(divide="ignore", invalid="ignore"):
    return off.max(axis=1) / entropy


def tad(codes, labels, *, variant: str = "grid11", auroc_threshold: float = 0.75,
        entropy_threshold: float = 0.2, range_min: float = 0.2, names=()) -> dict:
  """codes [N, D] (D >= 2), labels [N, A] in {0, 1} -> TAD and its parts."""
  codes, labels = np.asarray(codes), np.asarray(labels)
  if codes.ndim != 2 or labels.ndim != 2 or len(codes) != len(labels):
    raise ValueError(f"TAD: codes must be [N, D] and labels [N, A]; got {codes.shape} "
                     f"and {labels.shape}")
  if codes.shape[1] < 2:
    raise ValueError(f"TAD needs at least 2 latents (a second-best AUROC), got {codes.shape[1]}")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError("TAD: labels must be 0/1 (CelebA's -1/1 attributes: use (y + 1) // 2)")
  if not np.all(np.isfinite(codes)):
    raise ValueError("TAD: the codes contain NaN or inf")
  aurocs = np.nan_to_num(auroc_matrix(codes, labels, variant, range_min), nan=0.5)
  best = aurocs.max(axis=1)
  second = np.where(np.arange(aurocs.shape[1])[None, :] == aurocs.argmax(1)[:, None],
                    0.0, aurocs).max(axis=1)
  gaps = best - second
  rho = label_entropy_reduction(labels)
  with np.errstate(invalid="ignore"):
    kept = (best >= auroc_threshold) & (rho <= entropy_threshold)  # NaN rho -> dropped
  names = tuple(names) or tuple(f"attribute_{i}" for i in range(labels.shape[1]))
  return {"tad": float(gaps[kept].sum()), "num_attributes": int(kept.sum()),
          "variant": variant, "num_images": len(codes),
          "captured": [names[i] for i in np.flatnonzero(kept)],
          "best_latent": aurocs.argmax(1).tolist(), "best_auroc": best.tolist(),
          "gap": gaps.tolist()}
