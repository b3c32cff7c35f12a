"""TAD on latents whose answer is known, in each variant."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cldis_jax.metrics import tad


def _perfect(n=4000, attributes=6, spare=4, seed=0):
  rng = np.random.RandomState(seed)
  labels = (rng.rand(n, attributes) < 0.4).astype(np.int64)
  codes = np.concatenate([labels + 0.2 * rng.randn(n, attributes),
                          rng.randn(n, spare)], axis=1)
  return codes, labels, rng


def test_perfect_single_latent_attributes_give_gaps_near_one_half():
  codes, labels, _ = _perfect()
  out = tad.tad(codes, labels, variant="exact")
  assert out["num_attributes"] == 6
  assert np.all(np.array(out["gap"]) > 0.45)
  assert out["tad"] == pytest.approx(0.5 * 6, abs=0.25)
  assert out["best_latent"] == list(range(6))


def test_the_11_point_grid_understates_tad_as_documented():
  codes, labels, _ = _perfect()
  exact = tad.tad(codes, labels, variant="exact")["tad"]
  grid11 = tad.tad(codes, labels, variant="grid11")["tad"]
  grid101 = tad.tad(codes, labels, variant="grid101")["tad"]
  assert grid11 < grid101 < exact + 1e-9


def test_pure_noise_gives_zero():
  _, labels, rng = _perfect()
  for variant in tad.VARIANTS:
    out = tad.tad(rng.randn(len(labels), 10), labels, variant=variant)
    assert out["tad"] == 0.0 and out["num_attributes"] == 0


def test_the_auroc_and_entropy_filters_drop_attributes():
  codes, labels, rng = _perfect()
  weak = (labels[:, 0] + 3.0 * rng.randn(len(labels)))[:, None]  # AUROC ~ 0.55
  copy = labels[:, 1:2]  # a second attribute equal to attribute 1: rho = 1
  constant = np.zeros((len(labels), 1), np.int64)  # H = 0: rho is NaN, dropped
  new_labels = np.concatenate([labels[:, 1:], copy, constant], axis=1)
  new_codes = np.concatenate([codes[:, 1:6], weak, codes[:, 6:]], axis=1)
  out = tad.tad(new_codes, new_labels, variant="exact")
  # Attributes 1..5 are captured except attribute 1, now explained by its copy.
  assert out["num_attributes"] == 4
  assert out["captured"] == [f"attribute_{i}" for i in (1, 2, 3, 4)]


def test_exact_auroc_equals_sklearn_with_ties():
  rng = np.random.RandomState(0)
  codes = np.round(rng.randn(500, 3), 1)  # many ties
  labels = (rng.rand(500, 2) < 0.3).astype(int)
  got = tad.exact_auroc(codes, labels)
  for a in range(2):
    for j in range(3):
      assert got[a, j] == pytest.approx(roc_auc_score(labels[:, a], codes[:, j]), abs=1e-12)


def test_grid_auroc_follows_the_torch_code_step_by_step():
  """NashAE/DisDiff `calculate_auroc`: thresholds over [min, max], FPR and TPR
  sorted separately, right-endpoint areas, both directions."""
  rng = np.random.RandomState(0)
  z = rng.randn(300).astype(np.float32)
  y = (z + rng.randn(300) > 0.3).astype(int)
  lo, hi = z.min(), z.max()
  rows = {True: [], False: []}
  for t in np.arange(11, dtype=np.float32) / np.float32(10):
    thr = t * (hi - lo) + lo
    for positive in (True, False):
      pred = z >= thr if positive else z < thr
      rows[positive].append(((pred & (y == 0)).sum() / (y == 0).sum(),
                             (pred & (y == 1)).sum() / (y == 1).sum()))
  def area(r):
    r = np.sort(np.array(r), axis=0)
    return np.sum(r[1:, 1] * np.diff(r[:, 0]))
  pos, neg = tad.grid_auroc(z[:, None], y[:, None], 11, np.array([lo]), np.array([hi]))
  assert pos[0, 0] == pytest.approx(area(rows[True]))
  assert neg[0, 0] == pytest.approx(area(rows[False]))


def test_grid_variants_fix_narrow_latents_at_one_half():
  codes, labels, _ = _perfect()
  narrow = codes.copy()
  narrow[:, 0] = 0.15 * (narrow[:, 0] - narrow[:, 0].min()) / np.ptp(narrow[:, 0])
  a = tad.auroc_matrix(narrow, labels, "grid11")
  assert np.all(a[:, 0] == 0.5)
  assert tad.auroc_matrix(narrow, labels, "exact")[0, 0] > 0.95  # scale-free


def test_bad_labels_and_shapes_are_named():
  codes, labels, _ = _perfect(n=50)
  with pytest.raises(ValueError, match="0/1"):
    tad.tad(codes, 2 * labels - 1)
  with pytest.raises(ValueError, match="at least 2 latents"):
    tad.tad(codes[:, :1], labels)
  with pytest.raises(ValueError, match="not one of"):
    tad.tad(codes, labels, variant="grid7")
