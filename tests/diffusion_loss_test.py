"""The denoiser's training recipe: prediction targets (eps, v, x0) consistent
through the loss, DDIM sampling and inversion; the timestep weights against
their papers' formulas; the high-noise timestep draw and its importance
correction; code dropout and classifier-free guidance at decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import (checks, config_lib, diffusion, diffusion_loss, errors, inference,
                       models as models_lib, objective)
from conftest import config_path

FULL = diffusion.Diffusion.create("linear", 1000)


def _process(prediction, steps=None):
  full = diffusion.Diffusion.create("linear", 1000, prediction)
  return full if steps is None else full.respace(steps)


def _batch(seed=0, shape=(6, 4, 4, 3)):
  k0, k1, k2 = jax.random.split(jax.random.key(seed), 3)
  x0 = jax.random.uniform(k0, shape, minval=-1, maxval=1)
  eps = jax.random.normal(k1, shape)
  t = jax.random.randint(k2, (shape[0],), 0, 1000).at[0].set(999).at[1].set(0)
  return x0, eps, t


def _f64(process, t):
  abar = process.alphas_cumprod[np.asarray(t)][:, None, None, None]
  return abar, abar / (1 - abar)


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
def test_the_target_is_the_papers_and_eps_comes_back_from_it(prediction):
  x0, eps, t = _batch()
  process = _process(prediction)
  abar, _ = _f64(process, t)
  expected = {"eps": eps, "x0": x0,
              "v": np.sqrt(abar) * np.asarray(eps) - np.sqrt(1 - abar) * np.asarray(x0)}
  target = process.target(x0, eps, t)
  np.testing.assert_allclose(target, expected[prediction], atol=1e-6)
  x_t = process.q_sample(x0, t, eps)
  back = process.eps_from(x_t, t, target)
  # x0's eps divides by sqrt(1 - abar), 0.01 at t = 0: compare there loosely
  tol = 2e-2 if prediction == "x0" else 1e-5
  np.testing.assert_allclose(back, eps, atol=tol)
  np.testing.assert_allclose(back[2:], eps[2:], atol=1e-4)


def _oracle(process_full, prediction, x0):
  """The perfect denoiser of a data set holding only x0 (original timesteps)."""
  abar_all = jnp.asarray(process_full.alphas_cumprod, jnp.float32)

  def model_fn(x, t):
    a = abar_all[t][:, None, None, None]
    eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    return {"eps": eps, "x0": jnp.broadcast_to(x0, x.shape),
            "v": jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0}[prediction]
  return model_fn


@pytest.mark.parametrize("prediction", diffusion.PREDICTIONS)
def test_ddim_with_the_perfect_denoiser_of_any_target_lands_on_the_image(prediction):
  x0, _, _ = _batch(1)
  x0 = 0.9 * x0
  x_T = jax.random.normal(jax.random.key(2), x0.shape)
  process = _process(prediction, 20)
  model_fn = _oracle(_process(prediction), prediction, x0)
  np.testing.assert_allclose(process.ddim_sample(model_fn, x_T), x0, atol=1e-4)
  # inversion and decoding: the same x_T whatever the target
  inverted = process.ddim_invert(model_fn, x0)
  eps_inverted = _process("eps", 20).ddim_invert(_oracle(_process("eps"), "eps", x0), x0)
  np.testing.assert_allclose(inverted, eps_inverted, atol=1e-3)
  np.testing.assert_allclose(process.ddim_sample(model_fn, inverted), x0, atol=1e-4)


def _recipes():
  yield from ((p, w) for p in diffusion.PREDICTIONS for w in diffusion_loss.LOSS_WEIGHTS)


# The papers' weights on the x0-space error, with SNR = abar / (1 - abar).
PAPER_X0_WEIGHT = {
    ("none", "eps"): lambda snr: snr,
    ("none", "v"): lambda snr: snr + 1,
    ("none", "x0"): lambda snr: np.ones_like(snr),
    "p2": lambda snr: snr / (1.0 + snr) ** 0.5,  # eps-MSE / (k + SNR)^gamma, k=1, gamma=.5
    "min_snr": lambda snr: np.minimum(snr, 5.0),
    "truncated_snr": lambda snr: np.maximum(snr, 1.0),
}


@pytest.mark.parametrize("prediction,weight", list(_recipes()))
def test_every_recipe_weighs_the_x0_error_as_its_paper(prediction, weight):
  """Output the target of a wrong image x0_hat: the loss is the recipe's
  x0-space weight times |x0 - x0_hat|^2 (eps-MSE = SNR * x0-MSE, etc.)."""
  x0, eps, t = _batch(3)
  x0_hat = x0 + 0.1 * jax.random.normal(jax.random.key(4), x0.shape)
  process = _process(prediction)
  x_t = process.q_sample(x0, t, eps)
  abar, snr = _f64(process, t)
  eps_hat = (np.asarray(x_t, np.float64) - np.sqrt(abar) * np.asarray(x0_hat)) / np.sqrt(1 - abar)
  out = {"eps": eps_hat, "x0": np.asarray(x0_hat, np.float64),
         "v": np.sqrt(abar) * eps_hat - np.sqrt(1 - abar) * np.asarray(x0_hat)}[prediction]
  s = diffusion_loss.Settings(loss_weight=weight, p2_gamma=0.5)
  loss = diffusion_loss.per_image_loss(process, s, jnp.asarray(out, jnp.float32), x0, eps, t,
                                       jnp.ones(t.shape))
  paper = PAPER_X0_WEIGHT[("none", prediction) if weight == "none" else weight](snr[:, 0, 0, 0])
  x0_mse = np.mean(np.square(np.asarray(x0_hat) - np.asarray(x0)).reshape(len(t), -1), -1)
  # float32 outputs: at t = 0 eps_hat carries x0's error times 1/sqrt(1 - abar) = 100
  np.testing.assert_allclose(np.asarray(loss)[2:], (paper * x0_mse)[2:], rtol=2e-3)
  np.testing.assert_allclose(np.asarray(loss)[:2], (paper * x0_mse)[:2], rtol=5e-2)


def test_the_default_recipe_is_the_official_eps_loss_bit_for_bit():
  x0, _, _ = _batch(5)
  rng = jax.random.key(6)
  t, eps, x_t, weight = diffusion_loss.inputs(FULL, diffusion_loss.Settings(), x0, rng)
  k_t, k_eps = jax.random.split(rng)
  np.testing.assert_array_equal(t, jax.random.randint(k_t, (6,), 0, 1000))
  np.testing.assert_array_equal(eps, jax.random.normal(k_eps, x0.shape))
  np.testing.assert_array_equal(x_t, FULL.q_sample(x0, t, eps))
  out = eps + 0.3
  np.testing.assert_array_equal(
      diffusion_loss.per_image_loss(FULL, diffusion_loss.Settings(), out, x0, eps, t, weight),
      diffusion.eps_mse(out, eps))


def test_the_high_noise_draw_has_its_probabilities_and_importance_restores_uniform():
  s = diffusion_loss.Settings(timesteps="high", high_noise_from=700, high_noise_share=0.6,
                              importance=True)
  p = diffusion_loss.timestep_probabilities(s, 1000)
  assert p.sum() == pytest.approx(1.0)
  assert p[:700].sum() == pytest.approx(0.4 * 0.7) and p[700:].sum() == pytest.approx(0.4 * 0.3 + 0.6)
  t, w = jax.jit(lambda k: diffusion_loss.draw_timesteps(s, 1000, 200_000, k))(
      jax.random.key(7))
  t, w = np.asarray(t), np.asarray(w)
  assert np.mean(t >= 700) == pytest.approx(p[700:].sum(), abs=0.005)
  np.testing.assert_allclose(w, (1 / 1000) / p[t], rtol=1e-6)
  # E_p[w f(t)] = E_uniform[f(t)]: the importance-weighted mean of t is (T - 1) / 2
  assert np.mean(w * t) == pytest.approx(499.5, rel=0.01)
  assert np.mean(w) == pytest.approx(1.0, abs=0.01)
  plain = diffusion_loss.draw_timesteps(s._replace(importance=False), 1000, 8, jax.random.key(8))
  np.testing.assert_array_equal(plain[1], np.ones(8))


def test_dropped_codes_are_zero_rows_and_the_rest_untouched():
  cond = jax.random.normal(jax.random.key(9), (4000, 5)) + 3.0
  np.testing.assert_array_equal(objective.drop_codes(cond, 0.0, jax.random.key(1)), cond)
  dropped = np.asarray(objective.drop_codes(cond, 0.25, jax.random.key(1)))
  zero = np.all(dropped == 0, axis=1)
  assert np.mean(zero) == pytest.approx(0.25, abs=0.03)
  np.testing.assert_array_equal(dropped[~zero], np.asarray(cond)[~zero])


def test_guided_decoding_mixes_the_conditional_and_the_null_prediction(tiny_models, tiny_params,
                                                                      random_diffae_params):
  params = dict(tiny_params, diffae=random_diffae_params)
  z = jax.random.normal(jax.random.key(10), (2, tiny_models.diffae.z_dim))
  x_T = jax.random.normal(jax.random.key(11), (2, 16, 16, 3))
  config = config_lib.load_config(config_path("test.py"))
  plain = diffusion.process(config.diffusion, 4)
  assert diffusion.process(config.diffusion, 4, guidance=1.0) is plain
  guided = lambda w: inference.decode(tiny_models, diffusion.process(config.diffusion, 4,
                                                                     guidance=w), params, z, x_T)
  # w = 0: the null condition alone
  null_only = plain.ddim_sample(
      lambda x, t: models_lib.denoise_null(tiny_models, params, x, t), x_T)
  np.testing.assert_allclose(guided(0.0), null_only, atol=1e-5)
  np.testing.assert_array_equal(guided(1.0), inference.decode(tiny_models, plain, params, z, x_T))
  # w = 3: out(null) + 3 (out(z) - out(null)) at every step
  cond = lambda x, t: models_lib.denoise(tiny_models, params, x, t, z)
  null = lambda x, t: models_lib.denoise_null(tiny_models, params, x, t)
  expected = plain.ddim_sample(lambda x, t: null(x, t) + 3.0 * (cond(x, t) - null(x, t)), x_T)
  np.testing.assert_allclose(guided(3.0), expected, atol=1e-5)
  assert np.abs(guided(3.0) - guided(1.0)).max() > 1e-3  # the guidance does something


@pytest.mark.parametrize("override,message", [
    ({"diffusion.prediction": "epsilon"}, "diffusion.prediction = 'epsilon'; valid: eps, v, x0"),
    ({"diffusion.loss_weight": "snr"}, "diffusion.loss_weight = 'snr'; valid: none, p2, min_snr"),
    ({"diffusion.timesteps": "low"}, "diffusion.timesteps = 'low'; valid: uniform, high"),
    ({"diffusion.min_snr_gamma": 0.0}, "diffusion.min_snr_gamma = 0.0; valid: a number > 0"),
    ({"diffusion.high_noise_from": 1000}, "diffusion.high_noise_from = 1000; valid: 0 to 999"),
    ({"diffusion.high_noise_share": 1.5}, "diffusion.high_noise_share = 1.5; valid: 0 to 1"),
    ({"objective.code_dropout": 1.0}, "objective.code_dropout = 1.0; valid: 0 <= rate < 1"),
    ({"model.diffae.skip_dropout": -0.1}, "model.diffae.skip_dropout = -0.1; valid: 0 <= rate"),
    ({"edit.guidance": 2.0}, "edit.guidance = 2.0 needs a model trained with objective.code_"),
    ({"sample.guidance": -1.0, "objective.code_dropout": 0.1},
     "sample.guidance = -1.0; valid: a number >= 0"),
])
def test_a_bad_recipe_is_named_with_what_is_valid(override, message):
  config = config_lib.load_config(config_path("test.py"))
  config = config_lib.apply_overrides(config, config_lib.nested(override))
  with pytest.raises(errors.ConfigError, match="^" + message.replace(".", r"\.").replace(
      "(", r"\(").replace(")", r"\)")):
    checks.check(config)


def test_importing_official_weights_under_another_prediction_pool_or_shift_is_refused():
  from cldis_jax import convert  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(config_path("test.py"))
  convert.check_official(config)
  config.diffusion.prediction = "v"
  with pytest.raises(errors.ConfigError, match="official Diff-AE checkpoints predict eps"):
    convert.check_official(config)
  config.diffusion.prediction = "eps"
  config.model.diffae.enc_pool = "flatten"
  with pytest.raises(errors.ConfigError, match="enc_pool = 'flatten', but official"):
    convert.check_official(config)
  config.model.diffae.update(enc_pool="mean", cond_shift=True)
  with pytest.raises(errors.ConfigError, match="cond_shift = True, but official"):
    convert.check_official(config)


@pytest.mark.slow
def test_a_v_run_with_every_switch_trains_and_its_autoencoding_column_is_filled(tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  from cldis_jax import autoencoding_eval, evaluate, train  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(config_path("test.py"))
  config.diffusion.update(dict(prediction="v", loss_weight="min_snr", timesteps="high",
                               importance=True))
  config.objective.code_dropout = 0.2
  config.edit.guidance = 2.0
  config.train.update(dict(num_steps=3, checkpoint_every=3, log_every=3))
  config.samples.every = 0
  config.evaluate.update(dict(metrics=("autoencoding",), representations=("mu_s",)))
  workdir = str(tmp_path / "run")
  metrics = train.train_and_evaluate(config, workdir)["train"]
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  column = evaluate.run(config, workdir)["results"]["autoencoding"]
  assert (column["images"], column["noises"], column["guidance"]) == (4, 2, 2.0)
  names = set(column["oracle_accuracy"])
  assert names == {"floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"}
  for decodes in ("fresh", "inverted"):
    assert column[decodes]["mse"] >= 0
    assert set(column[decodes]["agreement"]) == names == set(column[decodes]["accuracy"])
    assert all(0 <= v <= 1 for v in column[decodes]["agreement"].values())
  assert column["fresh"]["min_agreement"] == min(column["fresh"]["agreement"].values())
  curve = column["code_use"]
  assert curve["bin_edges"] == [0, 333, 666, 1000] and len(curve["gap"]) == 3
  assert all(np.isfinite(curve["x0_mse_own_code"] + curve["x0_mse_other_code"]))
  assert os.path.isfile(curve["plot"]) and curve["plot"].endswith(autoencoding_eval.PLOT)
  assert "evaluate.fid.weights is not set" in column["inception"]["unavailable"]
