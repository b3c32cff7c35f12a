"""The factor probe on rendered traversals whose answer is known."""

import numpy as np
import pytest

from cldis_jax import data
from cldis_jax.data.shapes3d import FACTORS, ProceduralShapes3D
from cldis_jax.metrics import factor_probe


@pytest.fixture(scope="module")
def probe():
  return factor_probe.train_probe(ProceduralShapes3D(16), steps=400, batch_size=64, width=16,
                                  test_images=256)


@pytest.mark.slow
def test_probe_learns_the_hues(probe):
  assert probe.names == FACTORS.names
  for name in ("floor_hue", "wall_hue", "object_hue"):
    assert probe.accuracy[name] > 0.6, probe.accuracy


@pytest.mark.slow
def test_response_names_the_factor_each_rendered_traversal_sweeps(probe):
  source = ProceduralShapes3D(16)
  base = source.factors_of(np.random.RandomState(0).choice(len(source), 4, replace=False))
  swept = ["floor_hue", "wall_hue", "object_hue"]
  frames = np.zeros((4, 3, 5, 16, 16, 3), np.float32)
  for k, name in enumerate(swept):
    column = FACTORS.names.index(name)
    for f, value in enumerate([1, 3, 5, 7, 9]):
      factors = base.copy()
      factors[:, column] = value
      frames[:, k, f] = data.to_model_range(source.render(factors))
  summary = factor_probe.summarize(factor_probe.factor_response(probe, frames), probe.names)
  assert summary["dominant"] == swept
  assert summary["concentration"] > 0.5
  response = np.asarray(summary["response"])
  assert response.shape == (3, len(FACTORS.names))


def test_summary_of_a_known_response():
  summary = factor_probe.summarize(np.array([[0.3, 0.1], [0.0, 0.2]]), ("a", "b"))
  assert summary["dominant"] == ["a", "b"]
  np.testing.assert_allclose(summary["dominant_share"], [0.75, 1.0])
  np.testing.assert_allclose(summary["concentration"], 0.5 / 0.6)


@pytest.mark.slow
def test_even_frame_counts_are_refused(probe):
  with pytest.raises(ValueError, match="F odd"):
    factor_probe.factor_response(probe, np.zeros((1, 1, 4, 16, 16, 3)))
