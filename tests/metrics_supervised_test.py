"""The disentanglement_lib metrics: values on codes whose answer is known,
the protocol's random stream, and the edge cases (google-research/disentanglement_lib)."""

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from cldis_jax.data.source import FactorSpace
from cldis_jax.metrics import (beta_vae, dci, factor_vae, info, mig, modularity, protocol,
                               sap)

SPACE = FactorSpace(("a", "b", "c", "d", "e"), (10,) * 5)
GROUND_TRUTH = protocol.GroundTruth(SPACE.sizes, SPACE.index_of, SPACE.names)
SMALL = dict(num_train=2000, num_test=1000)


def _tables():
  """Codes of every row of SPACE: factors + small noise, and a random rotation."""
  rng = np.random.RandomState(1)
  factors = SPACE.factors_of(np.arange(len(SPACE)))
  codes = (factors - 4.5) / 3.0 + 0.05 * rng.randn(*factors.shape)
  rotation, _ = np.linalg.qr(rng.randn(5, 5))
  return codes.astype(np.float32), (codes @ rotation).astype(np.float32)


def _all_metrics(table):
  rep = protocol.table_representation(table)
  rs = lambda: np.random.RandomState(0)
  return dict(
      factor_vae=factor_vae.compute_factor_vae(
          GROUND_TRUTH, rep, rs(), num_train=1000, num_eval=500,
          num_variance_estimate=2000)["eval_accuracy"],
      beta_vae=beta_vae.compute_beta_vae(GROUND_TRUTH, rep, rs(), num_train=1000,
                                         num_eval=500)["eval_accuracy"],
      mig=mig.compute_mig(GROUND_TRUTH, rep, rs(), num_train=2000)["discrete_mig"],
      dci=dci.compute_dci(GROUND_TRUTH, rep, rs(), num_train=600, num_test=300),
      sap=sap.compute_sap(GROUND_TRUTH, rep, rs(), **SMALL)["SAP_score"],
      modularity=modularity.compute_modularity_explicitness(GROUND_TRUTH, rep, rs(), **SMALL))


@pytest.fixture(scope="module")
def scores():
  aligned, rotated = _tables()
  return _all_metrics(aligned), _all_metrics(rotated)


@pytest.mark.slow
def test_aligned_codes_score_near_the_maximum(scores):
  s, _ = scores
  assert s["factor_vae"] == 1.0 and s["beta_vae"] == 1.0
  assert s["mig"] > 0.9
  assert s["dci"]["disentanglement"] > 0.95 and s["dci"]["completeness"] > 0.95
  assert s["dci"]["informativeness_test"] > 0.95
  assert s["modularity"]["modularity_score"] > 0.95
  assert s["modularity"]["explicitness_score_test"] > 0.99
  assert s["sap"] > 0.05  # a 1-D linear SVM cannot isolate middle values (spec 5)


@pytest.mark.slow
def test_rotating_the_codes_lowers_every_metric_but_explicitness(scores):
  s, r = scores
  assert r["factor_vae"] < s["factor_vae"] - 0.2
  assert r["mig"] < 0.3 * s["mig"]
  assert r["dci"]["disentanglement"] < 0.5 * s["dci"]["disentanglement"]
  assert r["sap"] < 0.5 * s["sap"]
  assert r["beta_vae"] < s["beta_vae"]
  assert r["modularity"]["modularity_score"] < s["modularity"]["modularity_score"] - 0.1
  # A linear read-out of a rotated code is as good: explicitness stays.
  assert r["modularity"]["explicitness_score_test"] > 0.99


def test_duplicated_codes_keep_dci_disentanglement_and_halve_completeness():
  rng = np.random.RandomState(0)
  factors = rng.randint(0, 4, (600, 3))
  codes = factors + 0.05 * rng.randn(600, 3)
  out = dci.dci(np.concatenate([codes, codes], 1)[:400], factors[:400],
                np.concatenate([codes, codes], 1)[400:], factors[400:])
  assert out["disentanglement"] > 0.9
  # Importance split over two copies: C = 1 - log 2 / log 6 for D = 6 codes.
  assert out["completeness"] == pytest.approx(1 - np.log(2) / np.log(6), abs=0.08)


def test_dci_with_parallel_fits_equals_the_serial_fits_exactly():
  rng = np.random.RandomState(0)
  factors = rng.randint(0, 4, (500, 3))
  codes = factors @ rng.randn(3, 4) + 0.3 * rng.randn(500, 4)
  serial = dci.dci(codes[:300], factors[:300], codes[300:], factors[300:], workers=1)
  parallel = dci.dci(codes[:300], factors[:300], codes[300:], factors[300:], workers=2)
  assert parallel == serial


def test_mig_of_codes_that_copy_each_factor_is_exactly_one():
  # Every combination once: the copies carry no information about other factors.
  grid = FactorSpace(("x", "y"), (4, 5)).factors_of(np.arange(20))
  factors = np.repeat(grid, 7, axis=0)
  assert mig.mig(factors.astype(np.float32), factors)["discrete_mig"] == pytest.approx(1.0)
  # Duplicating factor x's code makes its gap 0; y's stays 1.
  dup = np.stack([factors[:, 0], factors[:, 0], factors[:, 1]], 1).astype(np.float32)
  assert mig.mig(dup, factors)["per_factor"] == pytest.approx([0.0, 1.0])


def test_mutual_information_and_bins_match_sklearn_and_numpy():
  rng = np.random.RandomState(0)
  codes, factors = rng.randn(3000, 3), rng.randint(0, 7, (3000, 2))
  bins = info.histogram_discretize(codes, 20)
  assert bins.min() == 1 and bins.max() == 20
  assert (bins[codes.argmax(0), np.arange(3)] == 20).all()  # the maximum: last bin
  for d in range(3):
    for k in range(2):
      assert info.mutual_info(bins[:, d], factors[:, k]) == pytest.approx(
          mutual_info_score(factors[:, k], bins[:, d]), abs=1e-12)


def test_factor_vae_vectorised_votes_equal_the_library_loop():
  """Per-vote loop of the spec (section 2), compacted arg-min columns included."""
  _, rotated = _tables()
  table = np.concatenate([rotated, np.full((len(rotated), 1), 3.0, np.float32)], 1)
  rep = protocol.table_representation(table)
  got = factor_vae.compute_factor_vae(GROUND_TRUTH, rep, np.random.RandomState(0),
                                      num_train=300, num_eval=200, num_variance_estimate=500)
  rs = np.random.RandomState(0)
  _, idx = GROUND_TRUTH.sample(500, rs)
  variances = np.var(table[idx], axis=0, ddof=1)
  active = np.sqrt(variances) >= 0.05
  def loop_votes(n):
    v = np.zeros((5, table.shape[1]), np.int64)
    for _ in range(n):
      k = rs.randint(5)
      f = GROUND_TRUTH.sample_factors(64, rs)
      f[:, k] = f[0, k]
      local = np.var(table[GROUND_TRUTH.indices_of(f)], axis=0, ddof=1)
      v[k, np.argmin(local[active] / variances[active])] += 1
    return v
  train = loop_votes(300)
  classifier = train.argmax(0)
  acc = lambda v: v[classifier, np.arange(v.shape[1])].sum() / v.sum()
  assert got["train_accuracy"] == acc(train)
  assert got["eval_accuracy"] == acc(loop_votes(200))
  assert got["num_active"] == 5 and got["num_active_dims"] == 6  # the library's quirk


def test_sampling_follows_the_library_random_stream():
  """Chunks of batch_size; within a chunk one randint per factor column."""
  rep = protocol.table_representation(np.arange(len(SPACE), dtype=np.float32)[:, None])
  codes, factors = protocol.generate_batch_factor_code(
      GROUND_TRUTH, rep, 40, np.random.RandomState(0), batch_size=16)
  rs, expected = np.random.RandomState(0), []
  for n in (16, 16, 8):
    expected.append(np.stack([rs.randint(10, size=n) for _ in range(5)], 1))
  np.testing.assert_array_equal(factors, np.concatenate(expected))
  np.testing.assert_array_equal(codes[:, 0], SPACE.index_of(factors))


def test_a_single_valued_factor_is_not_latent_and_draws_nothing():
  """Like dSprites' colour in the library: never sampled, index filled with 0."""
  with_colour = FactorSpace(("colour", "a", "b"), (1, 3, 4))
  gt = protocol.GroundTruth(with_colour.sizes, with_colour.index_of, with_colour.names)
  plain = protocol.GroundTruth((3, 4), FactorSpace(("a", "b"), (3, 4)).index_of)
  f1, i1 = gt.sample(50, np.random.RandomState(0))
  f2, i2 = plain.sample(50, np.random.RandomState(0))
  np.testing.assert_array_equal(f1, f2)
  np.testing.assert_array_equal(i1, i2)
  assert gt.latent_names == ("a", "b")


def test_bad_inputs_give_clear_errors_not_crashes():
  rng = np.random.RandomState(0)
  factors = np.stack([rng.randint(0, 3, 100), np.zeros(100, int)], 1)
  with pytest.raises(ValueError, match="factor 1 takes a single value"):
    mig.mig(rng.randn(100, 3), factors)
  with pytest.raises(ValueError, match="at least 2 code dimensions"):
    sap.sap(rng.randn(100, 1), factors[:, :1], rng.randn(100, 1), factors[:, :1])
  with pytest.raises(ValueError, match="NaN or inf"):
    mig.mig(np.full((100, 2), np.nan), factors[:, :1])


def test_a_constant_code_is_harmless():
  """The library crashes in explicitness here; we score the code as absent."""
  rng = np.random.RandomState(0)
  factors = rng.randint(0, 4, (800, 2))
  codes = np.concatenate([factors + 0.05 * rng.randn(800, 2), np.ones((800, 1))], 1)
  assert modularity.modularity(codes, factors) == pytest.approx(2 / 3, abs=0.02)
  ex = modularity.explicitness(codes[:500], factors[:500], codes[500:], factors[500:])
  assert ex["explicitness_score_test"] > 0.99
  assert mig.mig(codes, factors)["discrete_mig"] > 0.9


def test_liblinear_era_solver_runs_and_bad_solvers_are_named():
  aligned, _ = _tables()
  rep = protocol.table_representation(aligned)
  out = beta_vae.compute_beta_vae(GROUND_TRUTH, rep, np.random.RandomState(0),
                                  num_train=200, num_eval=100, solver="liblinear")
  assert out["eval_accuracy"] > 0.9
  with pytest.raises(ValueError, match="logistic solver 'newton'"):
    beta_vae.compute_beta_vae(GROUND_TRUTH, rep, np.random.RandomState(0), num_train=10,
                              num_eval=10, solver="newton")
