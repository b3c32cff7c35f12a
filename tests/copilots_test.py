"""The co-pilots: each regulariser against disentanglement_lib's formula on
fixed inputs, known answers of the estimators, FactorVAE's two updates, the
feedback link's range per co-pilot, and every co-pilot training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

from cldis_jax import (beta_controller, config_lib, copilots, diffusion, distributions, errors,
                       models as models_lib, objective, train)
from cldis_jax.models.discriminator import Discriminator

from conftest import config_path
from train_parallel_test import four_devices_against_one
from train_test import read_state

# ---- disentanglement_lib, transcribed to NumPy ----
# Source: google-research/disentanglement_lib, disentanglement_lib/methods/
# unsupervised/vae.py at 86a644d (compute_gaussian_kl, gaussian_log_density,
# total_correlation, compute_covariance_z_mean, regularize_diag_off_diag_dip,
# anneal, and the regularizer of BetaVAE, BetaTCVAE, DIPVAE, AnnealedVAE and
# FactorVAE's model_fn), and methods/shared/architectures.py
# (make_discriminator's clipping). Float64 throughout.


def lib_gaussian_kl(z_mean, z_logvar):
  return np.mean(0.5 * np.sum(np.square(z_mean) + np.exp(z_logvar) - z_logvar - 1, 1))


def lib_gaussian_log_density(samples, mean, log_var):
  normalization = np.log(2. * math.pi)
  inv_sigma = np.exp(-log_var)
  tmp = samples - mean
  return -0.5 * (tmp * tmp * inv_sigma + log_var + normalization)


def lib_total_correlation(z, z_mean, z_logvar):
  log_qz_prob = lib_gaussian_log_density(z[:, None, :], z_mean[None, :, :],
                                         z_logvar[None, :, :])
  log_qz_product = np.sum(logsumexp(log_qz_prob, axis=1), axis=1)
  log_qz = logsumexp(np.sum(log_qz_prob, axis=2), axis=1)
  return np.mean(log_qz - log_qz_product)


def lib_covariance_z_mean(z_mean):
  expectation_z_mean_z_mean_t = np.mean(z_mean[:, :, None] * z_mean[:, None, :], axis=0)
  expectation_z_mean = np.mean(z_mean, axis=0)
  return expectation_z_mean_z_mean_t - expectation_z_mean[:, None] * expectation_z_mean[None, :]


def lib_dip(covariance_matrix, lambda_od, lambda_d):
  diagonal = np.diag(covariance_matrix)
  off_diagonal = covariance_matrix - np.diag(diagonal)
  return lambda_od * np.sum(off_diagonal**2) + lambda_d * np.sum((diagonal - 1)**2)


def lib_anneal(c_max, step, iteration_threshold):
  return min(c_max * 1., c_max * 1. * step / iteration_threshold)


def lib_softmax(logits):
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def lib_regularizer(kind, value, z_mean, z_logvar, z, step, logits_z, settings):
  kl = lib_gaussian_kl(z_mean, z_logvar)
  if kind == "beta_vae":
    return value * kl
  if kind == "beta_tcvae":
    return (value - 1.) * lib_total_correlation(z, z_mean, z_logvar) + kl
  if kind == "factor_vae":
    return kl + value * np.mean(logits_z[:, 0] - logits_z[:, 1])
  if kind in ("dip_vae_i", "dip_vae_ii"):
    cov = lib_covariance_z_mean(z_mean)
    if kind == "dip_vae_ii":
      cov = np.mean(np.stack([np.diag(v) for v in np.exp(z_logvar)]), axis=0) + cov
    return kl + lib_dip(cov, value, settings.lambda_d_factor * value)
  c = lib_anneal(value, step, settings.anneal_steps)
  return settings.gamma * abs(kl - c)


def lib_discriminator_loss(logits_z, logits_shuffled):
  probs_z = np.clip(lib_softmax(logits_z), 1e-6, 1 - 1e-6)
  probs_shuffled = np.clip(lib_softmax(logits_shuffled), 1e-6, 1 - 1e-6)
  return -(0.5 * np.mean(np.log(probs_z[:, 0])) + 0.5 * np.mean(np.log(probs_shuffled[:, 1])))


# ---- parity ----


def _codes(seed=0, batch=64, dim=10):
  rng = np.random.default_rng(seed)
  mu = rng.normal(0, 1.5, (batch, dim)).astype(np.float32)
  mu[:, 1] = 0.8 * mu[:, 0] + 0.3 * mu[:, 1]  # some dependence to penalise
  logvar = rng.normal(-2, 0.7, (batch, dim)).astype(np.float32)
  z = (mu + np.exp(0.5 * logvar) * rng.standard_normal((batch, dim))).astype(np.float32)
  return mu, logvar, z


@pytest.mark.parametrize("kind,value", [("beta_vae", 4.0), ("beta_tcvae", 6.0),
                                        ("factor_vae", 30.0), ("dip_vae_i", 5.0),
                                        ("dip_vae_ii", 5.0), ("annealed_vae", 25.0)])
@pytest.mark.parametrize("step", [37, 5000])
def test_each_regulariser_is_the_librarys_formula(kind, value, step):
  mu, logvar, z = _codes()
  logits = np.random.default_rng(1).normal(0, 2, (64, 2)).astype(np.float32)
  s = copilots.Settings(kind=kind, lambda_d_factor=copilots.LAMBDA_D_FACTOR.get(kind, 0.0),
                        anneal_steps=100)
  kl = jnp.mean(distributions.kl_standard_normal(jnp.asarray(mu), jnp.asarray(logvar)))
  tc = copilots.discriminator_tc(jnp.asarray(logits))
  ours, _ = jax.jit(copilots.regulariser, static_argnums=0)(
      s, jnp.float32(value), kl, dict(mu=mu, logvar=logvar, z=z), step, tc)
  want = lib_regularizer(kind, value, *(a.astype(np.float64) for a in (mu, logvar, z)), step,
                         logits.astype(np.float64), s)
  # float32 rounding of sums over the batch, the dims and (TC) the B x B pairs
  assert float(ours) == pytest.approx(want, rel=2e-5, abs=1e-3), (float(ours), want)


def test_the_total_correlation_and_the_discriminator_loss_are_the_librarys():
  mu, logvar, z = _codes(seed=2, batch=128, dim=6)
  ours = copilots.total_correlation(jnp.asarray(z), jnp.asarray(mu), jnp.asarray(logvar))
  want = lib_total_correlation(*(a.astype(np.float64) for a in (z, mu, logvar)))
  assert float(ours) == pytest.approx(want, rel=1e-5, abs=1e-4)
  rng = np.random.default_rng(3)
  real, shuffled = rng.normal(0, 3, (2, 50, 2)).astype(np.float32)
  real[0] = (40.0, -40.0)  # a saturated row: the library's clipping decides it
  ours = copilots.discriminator_loss(jnp.asarray(real), jnp.asarray(shuffled))
  assert float(ours) == pytest.approx(lib_discriminator_loss(real.astype(np.float64),
                                                             shuffled.astype(np.float64)),
                                      rel=1e-5)


# ---- known answers ----


def test_tc_of_identical_posteriors_is_the_estimators_value_for_independence():
  """Every image with the same factorised posterior: q(z) is that posterior,
  TC is 0, and the estimate without its constant is -(d - 1) log B."""
  batch, dim = 32, 5
  rng = np.random.default_rng(0)
  mu = np.tile(rng.normal(size=(1, dim)), (batch, 1))
  logvar = np.tile(rng.normal(-1, 0.3, size=(1, dim)), (batch, 1))
  z = mu + np.exp(0.5 * logvar) * rng.standard_normal((batch, dim))
  tc = copilots.total_correlation(*(jnp.asarray(a, jnp.float32) for a in (z, mu, logvar)))
  assert float(tc) == pytest.approx(-(dim - 1) * np.log(batch), abs=1e-4)


def test_tc_estimate_finds_zero_for_independent_codes_and_the_gaussian_tc_of_copied_ones():
  """mu ~ N(0, I) with posteriors N(mu, 0.7^2): z is Gaussian, with TC 0 when
  mu's dims are independent and -1/2 log det(R) when they are copies (R the
  correlation of z). The estimate plus (d - 1) log B recovers both."""
  batch, dim, sigma = 512, 3, 0.7
  rng = np.random.default_rng(0)
  logvar = np.full((batch, dim), np.log(sigma**2))
  independent = rng.standard_normal((batch, dim))
  copied = np.repeat(independent[:, :1], dim, axis=1)
  rho = 1 / (1 + sigma**2)
  corr = np.full((dim, dim), rho) + (1 - rho) * np.eye(dim)
  for mu, want in ((independent, 0.0), (copied, -0.5 * np.log(np.linalg.det(corr)))):
    z = mu + sigma * rng.standard_normal((batch, dim))
    tc = copilots.total_correlation(*(jnp.asarray(a, jnp.float32) for a in (z, mu, logvar)))
    assert float(tc) + (dim - 1) * np.log(batch) == pytest.approx(want, abs=0.05)


def test_dip_penalty_is_zero_for_identity_covariance_and_not_otherwise():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((200, 5))
  x -= x.mean(0)
  whitened = x @ np.linalg.inv(np.linalg.cholesky(x.T @ x / len(x))).T  # Cov = I exactly
  mu = jnp.asarray(whitened, jnp.float32)
  for kind, scale, var in (("dip_vae_i", 1.0, 1e-30), ("dip_vae_ii", 0.6, 0.64)):
    cov = copilots.dip_covariance(scale * mu, jnp.full(mu.shape, np.log(var)), kind)
    assert float(copilots.dip_penalty(cov, 10.0, 100.0)) < 1e-8, kind
  skewed = copilots.dip_covariance(mu * jnp.asarray([1, 1, 1, 1, 2.0]), jnp.zeros(mu.shape) - 60,
                                   "dip_vae_i")
  assert float(copilots.dip_penalty(skewed, 1.0, 1.0)) == pytest.approx(9.0, rel=1e-4)


def test_shuffled_codes_keep_every_columns_values_and_recombine_rows():
  z = jnp.asarray(np.random.default_rng(0).standard_normal((64, 6)), jnp.float32)
  shuffled = np.asarray(copilots.shuffle_codes(z, jax.random.key(3)))
  np.testing.assert_array_equal(np.sort(shuffled, axis=0), np.sort(np.asarray(z), axis=0))
  # each column moved on its own: no row of z survives whole
  rows = {tuple(r) for r in np.asarray(z)}
  assert sum(tuple(r) in rows for r in shuffled) <= 2


def test_the_annealed_capacity_ramps_linearly_then_holds():
  got = [float(copilots.anneal(25.0, s, 100)) for s in (0, 50, 100, 400)]
  assert got == [lib_anneal(25.0, s, 100) for s in (0, 50, 100, 400)] == [0, 12.5, 25, 25]


def test_the_discriminator_learns_to_tell_dependent_codes_from_shuffled_ones():
  """Copied columns against their shuffles: separable, so the discriminator's
  loss falls from log 2 under the library's Adam."""
  net = Discriminator(num_layers=2, units=64)
  params = net.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  tx = optax.adam(1e-3, b1=0.5, b2=0.9)
  opt = tx.init(params)

  def loss_fn(p, z, rng):
    return copilots.discriminator_loss(net.apply({"params": p}, z),
                                       net.apply({"params": p}, copilots.shuffle_codes(z, rng)))

  @jax.jit
  def step(p, opt, rng):
    k_z, k_s = jax.random.split(rng)
    base = jax.random.normal(k_z, (128, 1))
    z = jnp.concatenate([base, base, -base, jax.random.normal(k_z, (128, 1))], axis=1)
    loss, grads = jax.value_and_grad(loss_fn)(p, z, k_s)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, loss

  losses = []
  for i in range(300):
    params, opt, loss = step(params, opt, jax.random.key(i))
    losses.append(float(loss))
  assert losses[0] == pytest.approx(np.log(2), abs=0.05)
  assert np.mean(losses[-20:]) < 0.3, losses[-20:]


# ---- configs, the feedback link ----


def test_an_unknown_copilot_is_refused_naming_the_valid_ones():
  config = config_lib.load_config(config_path("test.py"))
  config.model.copilot = "factorvae"
  with pytest.raises(errors.ConfigError, match=r"model.copilot = 'factorvae' is not a co-pilot; "
                     r"valid: beta_vae, beta_tcvae, factor_vae, dip_vae_i, dip_vae_ii, "
                     r"annealed_vae"):
    models_lib.build_models(config.model)


def test_each_copilot_gets_its_own_range_unless_the_config_sets_one():
  c = config_lib.base_config().objective.controller
  for kind, entry in copilots.TABLE.items():
    resolved = copilots.controller_config(c, kind)
    assert {k: resolved[k] for k in copilots.CONTROLLER_KEYS} == entry.controller
    assert resolved.beta_min <= entry.grid[0] < resolved.beta_max, kind
  assert copilots.controller_config(c, "beta_vae").beta_max == 8.0  # today's default
  c.beta_max = 60.0
  assert copilots.controller_config(c, "factor_vae").beta_max == 60.0


def test_a_run_stored_with_the_controllers_numbers_resumes_under_the_none_defaults():
  old, new = config_lib.base_config(), config_lib.base_config()
  old.objective.controller.update(beta_init=1.0, beta_min=1.0, beta_max=8.0, kp=0.01, ki=0.001)
  same = lambda a, b: config_lib.training_changes(copilots.with_controller(a),
                                                  copilots.with_controller(b))
  assert same(old, new) == []
  new.model.copilot = "factor_vae"
  changes = same(old, new)
  assert "model.copilot: 'beta_vae' -> 'factor_vae'" in changes
  assert "objective.controller.beta_max: 8.0 -> 100.0" in changes


def test_the_annealed_capacity_falls_where_a_pressure_would_rise():
  """pi_kl with the KL above its set point raises beta (beta_vae) and lowers
  C (annealed_vae): the same feedback, each in its own units."""
  out = {}
  for kind in ("beta_vae", "annealed_vae"):
    c = copilots.controller_config(config_lib.base_config().objective.controller, kind)
    c.update(kind="pi_kl", kl_max=2.0, kl_start=2.0, beta_init=c.beta_min + 5.0 if
             kind == "annealed_vae" else c.beta_init)
    state = beta_controller.init_controller(c)
    start = float(state.beta)
    for _ in range(50):
      state = beta_controller.update_controller(c, state, diff_loss=1.0, kl=6.0,
                                                sign=copilots.TABLE[kind].sign)
    out[kind] = float(state.beta) - start
  assert out["beta_vae"] > 0 > out["annealed_vae"], out


# ---- training ----


def _config(kind):
  config = config_lib.load_config(config_path("test.py"))
  config.model.copilot = kind
  config.model.discriminator.update(num_layers=2, units=32)
  config.samples.every = 0
  return config


def test_factor_vaes_two_losses_reach_only_their_own_parameters():
  config = _config("factor_vae")
  nets = models_lib.build_models(config.model)
  params = models_lib.init_params(nets, jax.random.key(0))
  x0 = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3), minval=-1, maxval=1)
  process = diffusion.process(config.diffusion)
  s = copilots.settings(config)

  def part(p, name):
    _, aux = objective.closed_loop_loss(p, nets, process, config.objective, jnp.float32(30.0),
                                        x0, jax.random.key(2), copilot=s)
    return aux[name]

  # One jitted program for both gradients (op by op was 2-3x slower here).
  grad_tc, grad_disc = jax.jit(lambda p: (jax.grad(lambda q: part(q, "vae_tc"))(p),
                                          jax.grad(lambda q: part(q, "loss_discriminator"))(p))
                               )(params)
  norm = lambda tree: float(optax.tree.norm(tree))
  # TC trains the encoder (through z), not the discriminator; the
  # discriminator's loss trains the discriminator, not the encoder.
  assert norm(grad_tc["vae"]) > 0 and norm(grad_tc["discriminator"]) == 0
  assert norm(grad_disc["discriminator"]) > 0 and norm(grad_disc["vae"]) == 0
  assert norm(grad_disc["diffae"]) == 0 == norm(grad_disc["head"])


# Each co-pilot's extra logged term (beta_vae has none).
EXTRA_TERM = {"beta_tcvae": "vae_tc", "factor_vae": "loss_discriminator",
              "dip_vae_i": "vae_dip", "dip_vae_ii": "vae_dip", "annealed_vae": "vae_capacity"}
# The co-pilots whose terms couple the images of a batch: the B x B TC
# estimate, the shuffled codes and the discriminator, the batch covariance.
# (beta_vae's and annealed_vae's are sums of per-image terms, as CL-Dis's
# sharded step test already covers.) Their sharded test also checks that every
# term is finite, so they are not trained in the loop a second time here.
BATCH_COUPLED = ("beta_tcvae", "factor_vae", "dip_vae_ii")


def test_the_copilot_lists_of_these_tests_cover_the_table():
  assert set(EXTRA_TERM) | {"beta_vae"} == set(copilots.COPILOTS)
  assert set(BATCH_COUPLED) <= set(copilots.COPILOTS)


@pytest.mark.parametrize("kind", [
    k if k == "factor_vae" else pytest.param(k, marks=pytest.mark.slow)
    for k in copilots.COPILOTS if k == "factor_vae" or k not in BATCH_COUPLED])
def test_each_copilot_trains_in_the_loop_with_finite_terms(kind, tmp_path):
  config = _config(kind)
  config.train.update(num_steps=3, log_every=1, checkpoint_every=0)
  metrics = train.train_and_evaluate(config, str(tmp_path))["train"]
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  if kind in EXTRA_TERM:
    assert EXTRA_TERM[kind] in metrics, sorted(metrics)


@pytest.mark.slow
def test_factor_vae_resumed_equals_uninterrupted(tmp_path):
  """Two optimisers in one state: a run stopped at step 2 and resumed ends
  where the straight run does, discriminator and its Adam included."""
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  config = _config("factor_vae")
  config.train.update(num_steps=4, log_every=2, checkpoint_every=2)
  train.train_and_evaluate(config, straight)
  config.train.num_steps = 2
  train.train_and_evaluate(config, resumed)
  config.train.num_steps = 4
  train.train_and_evaluate(config, resumed)
  (step_a, a), (step_b, b) = read_state(straight), read_state(resumed)
  assert step_a == step_b == 4 and "discriminator" in a["params"]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
@pytest.mark.parametrize("kind", BATCH_COUPLED)
def test_batch_coupled_copilots_sharded_equal_unsharded(kind):
  result = four_devices_against_one(f'model.copilot="{kind}"',
                                    'model.discriminator={"num_layers": 2, "units": 32}')
  assert result["max_param_diff"] < 1e-5, result
  np.testing.assert_allclose(*result["grad_norm"], rtol=1e-4)
  np.testing.assert_allclose(*result["loss"], rtol=1e-5)
  assert result["finite"] and EXTRA_TERM[kind] in result["terms"], result
