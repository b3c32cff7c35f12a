"""beta-VAE co-pilot, distillation head and the closed-form distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import distributions
from cldis_jax.models import BetaVAE, DistillHead
from cldis_jax.models import beta_vae


@pytest.mark.parametrize("size,layers", [(16, 2), (32, 3), (64, 4), (128, 5)])
def test_shapes_at_power_of_two_sizes(size, layers):
  vae = BetaVAE(image_size=size, latent_dim=6, hidden_channels=8, hidden_dim=16)
  x = jnp.zeros((2, size, size, 3))
  out, variables = jax.eval_shape(
      lambda: vae.init_with_output(jax.random.key(0), x, jax.random.key(1)))
  assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, 6)
  assert out["logits"].shape == x.shape
  assert out["nll"].shape == out["kl"].shape == (2,)
  encoder = variables["params"]["encoder"]
  assert sorted(k for k in encoder if k.startswith("conv")) == [f"conv_{i}" for i in range(layers)]


def test_burgess_64px_layout():
  vae = BetaVAE(image_size=64, latent_dim=10)
  x = jnp.zeros((1, 64, 64, 3))
  params = jax.eval_shape(lambda: vae.init(jax.random.key(0), x, jax.random.key(1)))["params"]
  enc, dec = params["encoder"], params["decoder"]
  assert enc["conv_0"]["kernel"].shape == (4, 4, 3, 32)
  assert enc["fc_0"]["kernel"].shape == (32 * 4 * 4, 256)
  assert enc["out"]["kernel"].shape == (256, 20)
  assert dec["fc_2"]["kernel"].shape == (256, 32 * 4 * 4)
  assert dec["deconv_3"]["kernel"].shape == (4, 4, 32, 3)


@pytest.mark.parametrize("size", [0, 4, 48, 100])
def test_bad_image_size_is_a_clear_error(size):
  with pytest.raises(ValueError, match=f"power of two >= 8, got {size}"):
    beta_vae.num_stride2_layers(size)


def test_unknown_likelihood_is_a_clear_error():
  vae = BetaVAE(image_size=16, latent_dim=2, likelihood="laplace")
  with pytest.raises(ValueError, match="'laplace'.*bernoulli"):
    vae.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), jax.random.key(1))


def test_kl_to_standard_normal_matches_monte_carlo():
  mu = jnp.array([[0.5, -1.0, 0.0, 2.0]])
  logvar = jnp.array([[0.0, -1.0, 1.0, -2.0]])
  z = distributions.sample_diag_gaussian(jax.random.key(0), jnp.repeat(mu, 400_000, 0),
                                         jnp.repeat(logvar, 400_000, 0))
  log_q = jax.scipy.stats.norm.logpdf(z, mu, jnp.exp(0.5 * logvar)).sum(-1)
  log_p = jax.scipy.stats.norm.logpdf(z).sum(-1)
  mc = float(jnp.mean(log_q - log_p))
  closed = float(distributions.kl_standard_normal(mu, logvar)[0])
  assert closed == pytest.approx(mc, abs=0.02)
  assert closed == pytest.approx(
      float(distributions.kl_diag_gaussians(mu, logvar, 0 * mu, 0 * logvar)[0]), rel=1e-6)


def test_kl_between_diagonal_gaussians_matches_monte_carlo():
  mu_q, logvar_q = jnp.array([[0.3, -0.2, 1.0]]), jnp.array([[-0.5, 0.2, 0.0]])
  mu_p, logvar_p = jnp.array([[0.0, 0.5, -1.0]]), jnp.array([[0.4, -0.3, 1.0]])
  n = 400_000
  z = distributions.sample_diag_gaussian(jax.random.key(1), jnp.repeat(mu_q, n, 0),
                                         jnp.repeat(logvar_q, n, 0))
  log_q = jax.scipy.stats.norm.logpdf(z, mu_q, jnp.exp(0.5 * logvar_q)).sum(-1)
  log_p = jax.scipy.stats.norm.logpdf(z, mu_p, jnp.exp(0.5 * logvar_p)).sum(-1)
  closed = float(distributions.kl_diag_gaussians(mu_q, logvar_q, mu_p, logvar_p)[0])
  assert closed == pytest.approx(float(jnp.mean(log_q - log_p)), abs=0.02)
  assert float(distributions.kl_diag_gaussians(mu_q, logvar_q, mu_q, logvar_q)[0]) == 0.0


@pytest.fixture(scope="module")
def vae_and_params():
  vae = BetaVAE(image_size=16, latent_dim=3, hidden_channels=8, hidden_dim=16)
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3), minval=-1, maxval=1)
  params = jax.jit(vae.init)(jax.random.key(1), x, jax.random.key(2))["params"]
  return vae, {"params": params}, x


def test_reparametrize_uses_the_rng_it_is_given(vae_and_params):
  vae, variables, x = vae_and_params
  mu, logvar = vae.apply(variables, x, method="encode")
  key = jax.random.key(7)
  z = vae.apply(variables, mu, logvar, key, method="reparametrize")
  expected = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
  np.testing.assert_allclose(z, expected, rtol=1e-6)
  z_other = vae.apply(variables, mu, logvar, jax.random.key(8), method="reparametrize")
  assert not jnp.allclose(z, z_other)


def test_reparametrize_falls_back_to_the_reparam_stream(vae_and_params):
  vae, variables, x = vae_and_params
  run = lambda seed: vae.apply(variables, x, rngs={"reparam": jax.random.key(seed)})["z"]
  assert jnp.array_equal(run(1), run(1))
  assert not jnp.allclose(run(1), run(2))


def test_decode_is_deterministic_and_image_in_range(vae_and_params):
  vae, variables, _ = vae_and_params
  z = jax.random.normal(jax.random.key(3), (4, 3))
  logits = vae.apply(variables, z, method="decode")
  img = beta_vae.decoded_image(logits)
  assert jnp.array_equal(logits, vae.apply(variables, z, method="decode"))
  assert img.shape == (4, 16, 16, 3) and float(img.min()) >= -1 and float(img.max()) <= 1


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_reconstruction_nll_is_smallest_at_the_true_image(likelihood):
  x = jnp.array([[[[-1.0, 0.0, 1.0]]]])  # one pixel, three channels
  target = (x + 1) / 2
  exact = jnp.log(jnp.clip(target, 1e-4, 1 - 1e-4) / (1 - jnp.clip(target, 1e-4, 1 - 1e-4)))
  best = distributions.reconstruction_nll(exact, x, likelihood)[0]
  for delta in (-0.5, 0.5):
    assert distributions.reconstruction_nll(exact + delta, x, likelihood)[0] > best
  if likelihood == "gaussian":
    assert float(best) == pytest.approx(0.0, abs=1e-6)


def test_distill_head_gives_a_diagonal_gaussian():
  head = DistillHead(latent_dim=5, z_dim=32)
  z = jax.random.normal(jax.random.key(0), (3, 32))
  (mu, logvar), variables = head.init_with_output(jax.random.key(1), z)
  assert mu.shape == logvar.shape == (3, 5)
  kernel = variables["params"]["proj"]["kernel"]
  bias = variables["params"]["proj"]["bias"]
  np.testing.assert_allclose(jnp.concatenate([mu, logvar], -1), z @ kernel + bias, rtol=1e-5,
                             atol=1e-6)
