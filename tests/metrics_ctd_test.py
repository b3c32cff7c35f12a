"""CTD on traversals rendered by the procedural Shapes3D-like scene with no
model (cldis_jax/metrics/ctd_validation.py): the orderings it must keep."""

import jax
import numpy as np
import pytest

from cldis_jax.metrics import ctd, flow
from cldis_jax.metrics import ctd_validation as V

EYE = np.eye(len(V.FACTORS))
SIZE = dict(num_sources=6, steps=4, resolution=32)


def _score(directions, noise=0.0, **kw):
  frames = V.traversals(directions, noise=noise, **SIZE, **kw)
  floor = ctd.noise_floor(*V.null_pairs(12, 32, noise)) if noise else None
  return ctd.ctd(frames, floor)


@pytest.fixture(scope="module")
def scores():
  out = {"truth": _score(EYE), "leak": _score(EYE, brightness_leak=0.4),
         "duplicate": _score(np.concatenate([EYE, -EYE[2:3]])),
         "negated": _score(-EYE)}
  # Below theta = pi/4 every plane of the rotation mixes more as theta grows
  # (at pi/2 the top plane is an axis swap again, i.e. disentangled).
  for theta in (0.2, 0.4, 0.7):
    out[theta] = _score(V.rotation(theta).T)
  for noise in (0.01, 0.03):
    out[("truth", noise)] = _score(EYE, noise)
    out[("mixed", noise)] = _score(V.rotation(0.7).T, noise)
  return out


def test_horn_schunck_recovers_a_known_shift():
  yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
  image = lambda dx, dy: (0.5 + 0.2 * np.sin((xx - dx) / 3) * np.cos((yy - dy) / 4)
                          + 0.2 * np.sin((xx - dx + yy - dy) / 6)).astype(np.float32)
  u = np.asarray(jax.jit(flow.hs_flow)(image(0, 0), image(1.5, -0.8)))
  np.testing.assert_allclose(u[16:48, 16:48].mean((0, 1)), [1.5, -0.8], atol=0.05)


@pytest.mark.slow
def test_ground_truth_directions_score_highest_and_mixing_lowers_the_score(scores):
  ladder = [scores["truth"]["ctd"]] + [scores[t]["ctd"] for t in (0.2, 0.4, 0.7)]
  assert all(a > b for a, b in zip(ladder, ladder[1:])), ladder
  assert ladder[0] > 0.8  # the notes' prototype: ~0.85 for perfect directions
  assert all(scores["truth"]["active"])


@pytest.mark.slow
def test_a_global_brightness_leak_lowers_preservation(scores):
  assert (np.mean(scores["leak"]["preservation"])
          < np.mean(scores["truth"]["preservation"]) - 0.1)
  assert scores["leak"]["ctd"] < scores["truth"]["ctd"]


@pytest.mark.slow
def test_a_duplicated_direction_drives_exclusivity_to_zero(scores):
  x = scores["duplicate"]["exclusivity"]
  assert x[2] < 0.02 and x[5] < 0.02  # object hue and its negation
  assert min(x[:2] + x[3:5]) > 0.5


@pytest.mark.slow
def test_the_score_does_not_depend_on_the_directions_sign(scores):
  assert scores["negated"]["ctd"] == pytest.approx(scores["truth"]["ctd"], abs=0.02)


@pytest.mark.slow
def test_the_ranking_survives_pixel_noise_with_a_calibrated_floor(scores):
  for noise in (0.01, 0.03):
    assert scores[("truth", noise)]["ctd"] > scores[("mixed", noise)]["ctd"] + 0.03
    floor = np.array(scores[("truth", noise)]["noise_floor"])
    assert floor.max() > 0.004  # calibrated above the minimum floor


def test_a_dead_direction_is_inactive_and_left_out():
  out = ctd.ctd(V.traversals(np.concatenate([EYE[:2], np.zeros((1, 5))]), num_sources=3,
                             steps=2, resolution=32))
  assert out["active"] == [True, True, False]
  assert out["per_direction"][2] == 0.0
  assert out["active_fraction"] == pytest.approx(2 / 3)
  assert out["ctd"] == pytest.approx(np.mean(out["per_direction"][:2]))


def test_bad_traversals_are_named():
  with pytest.raises(ValueError, match="odd number of frames"):
    ctd.ctd(np.zeros((2, 1, 4, 32, 32, 3)))
  with pytest.raises(ValueError, match="at least 2 sources"):
    ctd.ctd(np.zeros((1, 1, 5, 32, 32, 3)))
  with pytest.raises(ValueError, match="do not halve"):
    ctd.ctd(np.zeros((2, 1, 5, 30, 30, 3)))


def test_config_defaults_are_the_notes_settings():
  from cldis_jax import config_lib  # pylint: disable=g-import-not-at-top
  assert ctd.CTDParams.from_config(config_lib.base_config().evaluate.ctd) == ctd.CTDParams()
