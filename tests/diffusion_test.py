"""Diffusion math against the DDPM / DDIM formulas (Ho et al. 2020, Song et
al. 2021) and phizaz/diffae."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import diffusion

FULL = diffusion.Diffusion.create("linear", 1000)


def test_linear_schedule_reference_values():
  abar = FULL.alphas_cumprod
  assert abar[0] == pytest.approx(0.9999, rel=1e-12)
  assert abar[950] == pytest.approx(1.0604e-4, rel=1e-3)
  assert abar[999] == pytest.approx(4.036e-5, rel=1e-3)


def test_constant_schedule_and_unknown_name():
  betas = diffusion.beta_schedule("const0.008", 1000)
  assert np.all(betas == 0.008)
  with pytest.raises(ValueError, match="cosine"):
    diffusion.beta_schedule("cosine", 1000)


@pytest.mark.parametrize("steps,stride,last", [
    (10, 100, 900), (20, 50, 950), (50, 20, 980), (100, 10, 990), (250, 4, 996),
    (1000, 1, 999)])
def test_ddim_spacing(steps, stride, last):
  kept = diffusion.ddim_timesteps(1000, steps)
  assert len(kept) == steps and kept[0] == 0 and kept[-1] == last
  assert np.all(np.diff(kept) == stride)
  assert FULL.respace(steps).timesteps[-1] == last


def test_impossible_step_count_is_a_clear_error():
  with pytest.raises(ValueError, match="999 evenly strided"):
    diffusion.ddim_timesteps(1000, 999)


def test_respaced_process_keeps_alpha_bar_at_kept_steps():
  spaced = FULL.respace(20)
  np.testing.assert_allclose(spaced.alphas_cumprod, FULL.alphas_cumprod[spaced.timesteps],
                             rtol=1e-12)


def test_q_sample_and_predict_x0_invert_each_other():
  k1, k2 = jax.random.split(jax.random.key(0))
  x0 = jax.random.uniform(k1, (3, 4, 4, 3), minval=-1, maxval=1)
  noise = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 500, 999])
  x_t = FULL.q_sample(x0, t, noise)
  abar = FULL.alphas_cumprod[np.array(t)][:, None, None, None]
  np.testing.assert_allclose(x_t, np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(FULL.predict_x0(x_t, t, noise), x0, atol=2e-3)


def exact_eps_fn(x0):
  """The denoiser that knows the answer: eps of x_t under the full schedule."""
  abar = jnp.asarray(FULL.alphas_cumprod, jnp.float32)

  def eps_fn(x, t):
    a = abar[t][:, None, None, None]
    return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)

  return eps_fn


def _image(seed=0, shape=(2, 8, 8, 3)):
  return jax.random.uniform(jax.random.key(seed), shape, minval=-0.9, maxval=0.9)


@pytest.mark.parametrize("steps", [10, 20])
def test_ddim_with_exact_denoiser_returns_x0(steps):
  x0 = _image()
  x_T = jax.random.normal(jax.random.key(5), x0.shape)
  out = FULL.respace(steps).ddim_sample(exact_eps_fn(x0), x_T)
  np.testing.assert_allclose(out, x0, atol=1e-5)


@pytest.mark.parametrize("steps", [10, 20])
def test_inversion_then_sampling_returns_the_input(steps):
  x0 = _image(1)
  process = FULL.respace(steps)
  x_T = process.ddim_invert(exact_eps_fn(x0), x0)
  # The first call sees the clean image as x at t=0, so every later state lies on
  # the trajectory with noise e0 = x0 (1 - sqrt(abar_0)) / sqrt(1 - abar_0), and
  # with next-alpha 0 on the last step the code is e0 itself.
  a0 = FULL.alphas_cumprod[0]
  np.testing.assert_allclose(x_T, x0 * (1 - np.sqrt(a0)) / np.sqrt(1 - a0), atol=1e-4)
  np.testing.assert_allclose(process.ddim_sample(exact_eps_fn(x0), x_T), x0, atol=1e-5)


def _reference_ddim(eps_fn, x, process, invert):
  """A plain loop written from the spec (float64 tables, float32 coefficients)."""
  abar = process.alphas_cumprod
  f32 = lambda v: np.float32(v)
  order = range(len(abar)) if invert else reversed(range(len(abar)))
  x = np.asarray(x, np.float32)
  for k in order:
    recip, recipm1 = f32(np.sqrt(1 / abar[k])), f32(np.sqrt(1 / abar[k] - 1))
    eps = np.asarray(eps_fn(jnp.asarray(x), jnp.full((x.shape[0],), process.timesteps[k])))
    x0 = np.clip(recip * x - recipm1 * eps, -1, 1)
    eps = (recip * x - x0) / recipm1
    if invert:
      a = f32(abar[k + 1] if k + 1 < len(abar) else 0.0)
    else:
      a = f32(abar[k - 1] if k > 0 else 1.0)
    x = x0 * np.sqrt(a) + np.sqrt(f32(1) - a) * eps
  return x


def _smooth_eps_fn(x, t):
  return jnp.tanh(x) * jnp.cos(t[:, None, None, None] / 300.0) + 0.1 * x


@pytest.mark.parametrize("invert", [False, True])
def test_scan_matches_a_plain_loop_from_the_spec(invert):
  process = FULL.respace(10)
  x = _image(2) if invert else jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
  run = process.ddim_invert if invert else process.ddim_sample
  out = jax.jit(lambda v: run(_smooth_eps_fn, v))(x)
  np.testing.assert_allclose(out, _reference_ddim(_smooth_eps_fn, x, process, invert),
                             rtol=1e-5, atol=1e-5)


def test_sampler_traces_once_per_step_count():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def sample10(x_T):
    return FULL.respace(10).ddim_sample(_smooth_eps_fn, x_T)

  for seed in range(3):
    sample10(jax.random.normal(jax.random.key(seed), (2, 8, 8, 3)))


def test_eps_mse_is_per_sample_mean():
  pred = jnp.zeros((2, 2, 2, 3))
  eps = jnp.stack([jnp.ones((2, 2, 3)), 2 * jnp.ones((2, 2, 3))])
  np.testing.assert_allclose(diffusion.eps_mse(pred, eps), [1.0, 4.0])


def test_process_is_one_object_per_setting_so_jitted_samplers_compile_once(test_config):
  """diffusion.process caches by value: two equal configs give the same object,
  which is what jitted functions taking a process as a static argument hash."""
  again = test_config.copy_and_resolve_references().diffusion
  ddim = diffusion.process(test_config.diffusion, 10)
  assert diffusion.process(again, 10) is ddim
  assert diffusion.process(test_config.diffusion) is not ddim
  np.testing.assert_array_equal(ddim.timesteps, FULL.respace(10).timesteps)
  partial = diffusion.process(again, 4, t_start=0.5)
  assert diffusion.process(test_config.diffusion, 4, t_start=0.5) is partial
  np.testing.assert_array_equal(partial.timesteps, [125, 250, 375, 500])
  with pytest.raises(ValueError, match="6 DDIM steps do not fit below timestep 5"):
    diffusion.process(test_config.diffusion, 6, t_start=0.005)
