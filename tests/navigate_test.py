"""Navigation: the direction parameterisations, the decoder, the loss, and
`--mode=navigate` on a configs/test.py checkpoint."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import (api, checkpoint, codes, data, diffusion, edit, evaluate, navigate,
                       navigation)
from cldis_jax.models.navigator import Directions


def _config(test_config, **navigate_overrides):
  config = test_config.copy_and_resolve_references()
  config.navigate.update(navigate_overrides)
  return config


@pytest.mark.parametrize("parameterization", ["unit", "ortho"])
@pytest.mark.parametrize("start", ["pca", "random"])
def test_directions_are_unit_and_orthonormal_when_asked(parameterization, start):
  basis = np.linalg.qr(np.random.RandomState(0).randn(12, 12))[0].T
  module = Directions(5, 12, parameterization, start)
  params = module.init(jax.random.key(0), basis)["params"]
  a = np.asarray(module.apply({"params": params}, basis))
  assert a.shape == (5, 12)
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
  if parameterization == "ortho":
    np.testing.assert_allclose(a @ a.T, np.eye(5), atol=1e-5)
  if start == "pca":  # starts at the first basis vectors
    np.testing.assert_allclose(np.abs(np.sum(a * basis[:5], axis=1)), 1.0, atol=1e-4)


def test_too_many_orthonormal_directions_is_a_clear_error():
  with pytest.raises(ValueError, match="num_directions=13 exceeds z_dim=12"):
    Directions(13, 12, "ortho").init(jax.random.key(0), np.eye(12))


def test_decoding_process_spans_t_start_in_even_steps(test_config):
  one = navigation.decoding_process(test_config.diffusion, 0.5, 1)
  np.testing.assert_array_equal(one.timesteps, [500])
  four = navigation.decoding_process(test_config.diffusion, 0.5, 4)
  np.testing.assert_array_equal(four.timesteps, [125, 250, 375, 500])
  full = diffusion.process(test_config.diffusion)
  np.testing.assert_allclose(four.alphas_cumprod, full.alphas_cumprod[four.timesteps])
  with pytest.raises(ValueError, match="decode_steps=0 must be in"):
    navigation.decoding_process(test_config.diffusion, 0.5, 0)


def test_one_step_decoding_is_the_clipped_x0_prediction(test_config):
  full = diffusion.process(test_config.diffusion)
  one = navigation.decoding_process(test_config.diffusion, 0.5, 1)
  x_t = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  eps_fn = lambda x, t: jnp.tanh(x) * 0.7
  t = jnp.full((2,), 500)
  expected = jnp.clip(full.predict_x0(x_t, t, eps_fn(x_t, t)), -1, 1)
  for unroll in (False, True):
    np.testing.assert_allclose(one.ddim_sample(eps_fn, x_t, unroll=unroll), expected, atol=1e-6)


def test_shifts_have_both_signs_and_a_minimum_magnitude():
  index, eps = navigation.sample_shifts(jax.random.key(0), 4000, 7, 3.0, 0.5)
  eps = np.asarray(eps)
  assert np.abs(eps).min() >= 0.5 and np.abs(eps).max() <= 3.0
  assert 0.45 < np.mean(eps > 0) < 0.55
  assert set(np.asarray(index).tolist()) == set(range(7))


@pytest.mark.parametrize("parameterization", ["unit", "ortho"])
@pytest.mark.slow
def test_loss_falls_on_a_fixed_objective(trained_workdir, test_config, parameterization):
  """The jitted step (directions and reconstructor together) optimises the
  loss: with the step counter held at 0, every step sees the same pairs."""
  config = _config(test_config, parameterization=parameterization, learning_rate=3e-3)
  step, models, params = checkpoint.restore_ema(config, trained_workdir)
  source = data.build_source(config.data, image_size=16, channels=3)
  z_mean, z_cov = codes.zsem_moments(models, params, source, num_images=64)
  nav = navigation.build(config)
  state = navigation.init_state(config, nav, jax.random.key(0), z_mean, z_cov, step)
  step_fn = navigation.make_step(config, models, nav)
  x0 = data.spread_images(source, 8)
  losses = []
  for _ in range(25):
    state, aux = step_fn(state.replace(step=jnp.asarray(0, jnp.int32)), params, x0,
                         jax.random.key(3))
    losses.append(float(aux["loss"]))
  assert losses[-1] < 0.9 * losses[0], losses
  a, _ = navigation.directions_of(config, nav, state)
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
  if parameterization == "ortho":
    np.testing.assert_allclose(a @ a.T, np.eye(len(a)), atol=1e-5)


@pytest.fixture(scope="module")
def navigated(trained_workdir, tmp_path_factory, test_config):
  """Navigation for 6 steps (checkpoints at 3 and 6) on a copy of the run."""
  workdir = str(tmp_path_factory.mktemp("nav") / "run")
  shutil.copytree(trained_workdir, workdir)
  metrics = navigate.run(_config(test_config), workdir)
  return workdir, metrics


@pytest.mark.slow
def test_navigation_writes_checkpoints_metrics_events_and_a_grid(navigated, test_config):
  workdir, metrics = navigated
  out = os.path.join(workdir, "navigation")
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["3", "6"]
  assert json.load(open(os.path.join(out, "metrics.json"))) == metrics
  assert metrics["step"] == 6 and metrics["model_step"] == 4
  assert metrics["num_directions"] == test_config.model.latent_dim
  assert metrics["norm_max_error"] < 1e-5
  assert 0.0 <= metrics["accuracy"] <= 1.0
  assert len(metrics["per_direction_accuracy"]) == test_config.model.latent_dim
  assert os.path.exists(metrics["grid"])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))


@pytest.mark.slow
def test_resumed_navigation_equals_uninterrupted(navigated, test_config, tmp_path):
  workdir, _ = navigated
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, "navigation", "checkpoints", "6"))
  navigate.run(_config(test_config), resumed)  # from step 3
  _, nav, a = navigation.restore(workdir)
  _, _, b = navigation.restore(resumed)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_learned_directions_edit_and_evaluate(navigated, test_config):
  workdir, metrics = navigated
  model = api.load(workdir)
  directions, sigma = model.directions("navigation")
  np.testing.assert_allclose(sigma, metrics["direction_sigma"], rtol=1e-5)
  config = test_config.copy_and_resolve_references()
  config.edit.which = (0, 2)
  summary = edit.run(config, workdir)
  names = [os.path.basename(f) for f in summary["files"]]
  assert names == ["navigation_00.png", "navigation_02.png", "interpolation.png"]
  config.evaluate.metrics = ("ctd",)
  result = evaluate.run(config, workdir)
  assert set(result["results"]) == {"mu_s", "vae_mu", "z_sem_pca", "navigation"}
  assert len(result["results"]["navigation"]["ctd"]["per_direction"]) == len(directions)


@pytest.mark.slow
def test_a_non_finite_navigation_loss_stops_before_saving_that_step(trained_workdir, test_config,
                                                                     tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_workdir, workdir)
  config = _config(test_config, learning_rate=1e30, checkpoint_every=1, log_every=100)
  with pytest.raises(FloatingPointError, match=r"at step 1: .*loss=(nan|inf).*\(step 1\) is intact"):
    navigate.run(config, workdir)
  ckpts = os.path.join(workdir, "navigation", "checkpoints")
  assert sorted(os.listdir(ckpts)) == ["1"]  # the first update's state, nothing after it
  _, _, state = navigation.restore(workdir)
  assert int(state.step) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
