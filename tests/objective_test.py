"""The closed-loop objective: controller step responses, the distillation link's
gradient routing, the loss terms, and per-branch clipping."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import (beta_controller, config_lib, copilots, diffusion, models as models_lib,
                       objective, parallel, train_step)


def _controller(copilot="beta_vae", **overrides):
  """The default controller config of `copilot` with `overrides`."""
  c = config_lib.base_config().objective.controller
  c.update(overrides)
  return copilots.controller_config(c, copilot)


def _run(c, diff_losses=None, kls=None, state=None, dt_losses=None, infos=None):
  """Feeds a sequence of measurements; returns the final state and the betas."""
  given = [x for x in (diff_losses, kls, dt_losses, infos) if x is not None]
  n = len(given[0])
  series = [np.ones(n) if x is None else np.asarray(x, np.float32)
            for x in (diff_losses, kls, dt_losses, infos)]
  state = beta_controller.init_controller(c) if state is None else state
  update = jax.jit(lambda s, d, k, t, i: beta_controller.update_controller(
      c, s, diff_loss=d, kl=k, dt_loss=t, diff_info=i))
  betas = []
  for d, k, t, i in zip(*series):
    state = update(state, jnp.float32(d), jnp.float32(k), jnp.float32(t), jnp.float32(i))
    betas.append(float(state.beta))
  return state, np.array(betas)


FEEDBACK = dict(kind="diffusion_feedback", beta_init=2.0, beta_min=1.0, beta_max=4.0,
                kp=0.01, ki=0.01, ema_decay=0.0, warmup_steps=5, setpoint=1.0)


def test_diffusion_feedback_holds_beta_during_warmup_then_takes_the_reference():
  state, betas = _run(_controller(**FEEDBACK), diff_losses=[3.0, 2.0, 1.5, 1.2, 1.0])
  np.testing.assert_array_equal(betas, 2.0)
  assert float(state.reference) == pytest.approx(1.0)


@pytest.mark.parametrize("later_loss, direction", [(1.5, -1), (0.6, +1), (1.0, 0)])
def test_diffusion_feedback_lowers_beta_above_the_setpoint_and_raises_it_below(
    later_loss, direction):
  losses = [1.0] * 5 + [later_loss] * 20
  state, betas = _run(_controller(**FEEDBACK), diff_losses=losses)
  steps = np.diff(betas[4:])
  if direction == 0:  # at the set point the PI law holds its value
    np.testing.assert_allclose(betas[5:], 2.0, atol=1e-6)
  else:
    assert np.all(np.sign(steps) == direction), betas
  assert float(state.signal) == pytest.approx(later_loss)
  assert float(state.setpoint) == 1.0


def test_pi_kl_raises_beta_when_kl_is_above_its_setpoint_and_lowers_it_below():
  c = _controller(kind="pi_kl", beta_init=2.0, beta_min=1.0, beta_max=10.0, ema_decay=0.0,
                  ki=0.01, kl_start=5.0, kl_step=0.0)
  _, up = _run(c, kls=[8.0] * 20)
  _, down = _run(c, kls=[1.0] * 20)
  assert np.all(np.diff(up) > 0) and np.all(np.diff(down) < 0)


def test_pi_kl_setpoint_is_controlvaes_staircase():
  c = _controller(kl_start=0.5, kl_step=0.15, kl_period=5000, kl_max=1.0)
  got = [float(beta_controller.kl_setpoint(c, s)) for s in (0, 4999, 5000, 10000, 10**6)]
  np.testing.assert_allclose(got, [0.5, 0.5, 0.65, 0.8, 1.0], rtol=1e-6)


def test_beta_stays_inside_its_bounds_under_any_signal():
  rng = np.random.default_rng(0)
  k = np.arange(400)
  losses = np.exp(2.0 * np.sin(k / 30) + rng.normal(0, 0.5, size=400))  # slow swings + noise
  for kind in ("diffusion_feedback", "pi_kl"):
    c = _controller(**dict(FEEDBACK, kind=kind, ki=0.5, kp=2.0, kl_start=1.0, kl_step=0.0))
    _, betas = _run(c, diff_losses=losses, kls=losses)
    assert betas.min() >= 1.0 and betas.max() <= 4.0
    assert betas.min() == 1.0 and betas.max() == 4.0  # the law does reach both bounds


def test_the_integral_does_not_wind_up_during_saturation():
  """After 2000 steps pinned at beta_max, beta leaves it within a few steps of
  the signal crossing the set point (a wound-up integral would take ~2000)."""
  c = _controller(**FEEDBACK)
  state, betas = _run(c, diff_losses=[1.0] * 5 + [0.5] * 2000)
  assert betas[-1] == 4.0
  assert float(state.integral) <= c.beta_max - c.beta_min
  _, after = _run(c, diff_losses=[1.5] * 50, state=state)
  first_below = int(np.argmax(after < 4.0))
  assert after[first_below] < 4.0 and first_below <= 3, after[:10]
  assert after[-1] < 3.8  # falling at the integral rate ki * |error| = 0.005 per step


CAPACITY = dict(FEEDBACK, kind="diffusion_capacity", capacity=0.5, kl_max=20.0)
DISTILL = dict(FEEDBACK, kind="distillation_feedback", dt_target=1.0)


@pytest.mark.parametrize("kl, direction", [(8.0, +1), (2.0, -1), (5.0, 0)])
def test_diffusion_capacity_tracks_the_information_the_code_carries(kl, direction):
  """Set point = capacity * EMA(diffusion information): 0.5 * 10 nats = 5."""
  state, betas = _run(_controller(**CAPACITY), kls=[kl] * 25, infos=[10.0] * 25)
  np.testing.assert_array_equal(betas[:5], 2.0)  # warm-up
  if direction == 0:
    np.testing.assert_allclose(betas, 2.0, atol=1e-6)
  else:
    assert np.all(np.sign(np.diff(betas[4:])) == direction), betas
  assert float(state.setpoint) == pytest.approx(5.0)
  assert float(state.reference) == pytest.approx(10.0)


def test_diffusion_capacity_lowers_beta_as_the_code_gains_information():
  """The same KL: beta rises while the code carries little, then falls back
  once the diffusion branch's information grows past KL / capacity."""
  infos = [2.0] * 60 + [30.0] * 60
  _, betas = _run(_controller(**CAPACITY), kls=[3.0] * 120, infos=infos)
  peak = int(np.argmax(betas))
  assert 59 <= peak <= 61 and 2.5 < betas[peak] < 4.0, betas
  assert np.all(np.diff(betas[peak + 1:]) <= 0) and betas[-1] < betas[peak] - 0.5


def test_diffusion_capacity_setpoint_is_capped():
  state, _ = _run(_controller(**dict(CAPACITY, kl_max=3.0)), kls=[1.0] * 10, infos=[100.0] * 10)
  assert float(state.setpoint) == 3.0


@pytest.mark.parametrize("dt, direction", [(3.0, +1), (0.2, -1)])
def test_distillation_feedback_raises_beta_while_the_student_lags(dt, direction):
  _, betas = _run(_controller(**DISTILL), dt_losses=[dt] * 25)
  np.testing.assert_array_equal(betas[:5], 2.0)
  assert np.all(np.sign(np.diff(betas[4:])) == direction), betas


def test_distillation_feedback_settles_inside_its_range_on_a_plant_that_responds():
  """A toy plant where a higher beta shrinks the gap: L_dt = 3 / beta. The
  loop must settle at beta = 3 (L_dt = target 1), strictly inside [1, 4]."""
  c = _controller(**dict(DISTILL, ema_decay=0.0, ki=0.05))
  update = jax.jit(lambda s, t: beta_controller.update_controller(c, s, diff_loss=1.0, kl=1.0,
                                                            dt_loss=t))
  state, betas = beta_controller.init_controller(c), []
  for _ in range(600):
    state = update(state, 3.0 / state.beta)
    betas.append(float(state.beta))
  assert 2.9 < betas[-1] < 3.1 and np.ptp(betas[-50:]) < 0.01


@pytest.mark.parametrize("kind", ["diffusion_capacity", "distillation_feedback",
                                  "diffusion_paced"])
def test_new_laws_stay_in_bounds_and_do_not_wind_up(kind):
  c = _controller(**dict({**CAPACITY, **DISTILL}, kind=kind))
  high = dict(kls=[50.0] * 2000, infos=[1.0] * 2000, dt_losses=[50.0] * 2000)
  state, betas = _run(c, **high)
  assert betas.min() >= 1.0 and betas[-1] == 4.0
  low = dict(kls=[0.0] * 50, infos=[1.0] * 50, dt_losses=[0.0] * 50, diff_losses=[0.1] * 50)
  _, after = _run(c, state=state, **low)
  assert after[3] < 4.0 and after.min() >= 1.0, after[:10]


PACED = dict(FEEDBACK, kind="diffusion_paced", kl_max=10.0, beta_init=1.0)


def test_diffusion_paced_capacity_is_the_share_of_the_error_the_diffusion_branch_removed():
  """L_diff_ref = 2 at the end of warm-up; at L_diff = 0.5 three quarters of it
  are gone: C = 0.75 * kl_max. Beta holds during warm-up, rises while the KL
  is above C and falls while below."""
  losses = [4.0, 3.0, 2.5, 2.0, 2.0] + [0.5] * 20
  state, up = _run(_controller(**dict(PACED, beta_init=2.0)), diff_losses=losses,
                   kls=[9.0] * 25)
  np.testing.assert_array_equal(up[:5], 2.0)
  assert float(state.reference) == pytest.approx(2.0)
  assert float(state.setpoint) == pytest.approx(7.5)
  assert float(state.signal) == pytest.approx(9.0)
  assert np.all(np.diff(up[4:]) > 0), up
  _, down = _run(_controller(**dict(PACED, beta_init=2.0)), diff_losses=losses,
                 kls=[5.0] * 25)
  assert np.all(np.diff(down[4:]) < 0), down


def test_diffusion_paced_moves_both_ways_and_settles_inside_on_a_plant_that_responds():
  """A toy VAE whose KL falls with beta (9 nats at beta 1, 4 at beta 4) and a
  diffusion loss that decays: the capacity opens after the KL has run ahead,
  so beta first rises, then falls back and settles where KL = C, strictly
  inside [1, 4]."""
  c = _controller(**dict(PACED, kl_max=6.0, beta_max=4.0, ki=0.005, ema_decay=0.9))
  update = jax.jit(lambda s, d, k: beta_controller.update_controller(c, s, diff_loss=d, kl=k))
  state, betas = beta_controller.init_controller(c), []
  for k in range(1500):
    state = update(state, 0.02 + np.exp(-k / 60.0), 9.0 - 5.0 * (state.beta - 1.0) / 3.0)
    betas.append(float(state.beta))
  betas = np.array(betas)
  peak = int(np.argmax(betas))
  assert betas[peak] > betas[-1] + 0.2 and peak < 700, betas[::100]
  assert 1.0 < betas[-1] < 4.0 and np.ptp(betas[-100:]) < 0.02
  kl = 9.0 - 5.0 * (betas[-1] - 1.0) / 3.0
  assert kl == pytest.approx(float(state.setpoint), abs=0.05)


def test_constant_never_moves():
  c = _controller(kind="constant", beta_init=4.0, beta_max=8.0)
  _, betas = _run(c, diff_losses=np.linspace(0.1, 10, 50), kls=np.linspace(100, 0, 50))
  np.testing.assert_array_equal(betas, 4.0)


def test_bad_controller_settings_are_named():
  with pytest.raises(ValueError, match="'pid'.*diffusion_feedback"):
    beta_controller.init_controller(_controller(kind="pid"))
  with pytest.raises(ValueError, match="beta_min=1.0, beta_init=0.5"):
    beta_controller.init_controller(_controller(beta_init=0.5))


@pytest.mark.parametrize("branches, kind, match", [
    ((), "constant", "non-empty subset"), (("vae", "unet"), "constant", "non-empty subset"),
    (("diffae",), "pi_kl", "has no VAE"), (("vae",), "diffusion_feedback", "needs the diffusion"),
    (("vae",), "distillation_feedback", "needs the diffusion"),
    (("vae",), "diffusion_paced", "needs the diffusion")])
def test_bad_branch_and_controller_pairs_are_named(branches, kind, match):
  obj = config_lib.base_config().objective
  obj.branches, obj.controller.kind = branches, kind
  with pytest.raises(ValueError, match=match):
    objective.check_objective(obj)


def test_bad_distillation_direction_is_named():
  obj = config_lib.base_config().objective
  obj.dt_direction = "backward"
  with pytest.raises(ValueError, match="'backward'; valid: forward, reverse"):
    objective.check_objective(obj)


@pytest.mark.parametrize("mutual", [False, True])
def test_distillation_trains_the_student_and_the_teacher_only_when_mutual(mutual):
  rng = np.random.default_rng(1)
  t_mu, t_lv, s_mu, s_lv = (jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
                            for _ in range(4))
  loss = lambda *a: jnp.sum(objective.distillation_loss(*a, mutual=mutual))
  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(t_mu, t_lv, s_mu, s_lv)
  assert all(np.abs(g).max() > 0 for g in grads[2:])
  assert (np.abs(grads[0]).max() > 0) == mutual and (np.abs(grads[1]).max() > 0) == mutual


def test_distillation_is_the_closed_form_kl_and_zero_when_student_matches():
  mu, lv = jnp.array([[0.3, -1.0]]), jnp.array([[0.2, -0.5]])
  np.testing.assert_allclose(objective.distillation_loss(mu, lv, mu, lv, mutual=False), 0.0,
                             atol=1e-7)
  # KL(N(0,1) || N(1, e^2)) = log(e) + (1 + 1) / (2 e^2) - 1/2, one dim
  got = objective.distillation_loss(jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.ones((1, 1)),
                                    jnp.full((1, 1), 2.0), mutual=False)
  np.testing.assert_allclose(got, 1.0 + 2.0 / (2 * np.e**2) - 0.5, rtol=1e-6)


def test_reverse_distillation_does_not_let_the_student_cover_an_informative_dim():
  """A teacher dim with means spread N(0, 1) and posterior std 0.3. A student
  that ignores the image and widens sigma_s to the teacher's marginal std pays
  about 1.2 nats in the forward KL; in the reverse KL, which weighs the mean's
  error by the teacher's precision, that cover costs over 5 nats, and the
  student that predicts each mean pays the same as forward (both 0)."""
  rng = np.random.default_rng(0)
  t_mu = jnp.asarray(rng.normal(size=(4096, 1)), jnp.float32)
  t_lv = jnp.full_like(t_mu, 2 * np.log(0.3))
  cover_mu, cover_lv = jnp.zeros_like(t_mu), jnp.full_like(t_mu, np.log(1.0 + 0.09))
  kl = lambda d, mu, lv: float(jnp.mean(objective.distillation_loss(
      t_mu, t_lv, mu, lv, mutual=False, direction=d)))
  assert kl("forward", cover_mu, cover_lv) == pytest.approx(0.5 * np.log(1.09 / 0.09), rel=0.02)
  assert kl("reverse", cover_mu, cover_lv) > 5.0
  assert kl("forward", t_mu, t_lv) == kl("reverse", t_mu, t_lv) == 0.0


def test_mean_matching_is_each_dims_unexplained_share_whatever_its_scale():
  """A student that predicts a loud dim (std 1) and a quiet one (std 0.05) each
  with 10% of its spread as error costs 0.01 per dim on both; the KL of L_dt
  would charge the quiet dim's error almost nothing."""
  rng = np.random.default_rng(0)
  teacher = rng.normal(size=(4096, 2)) * np.array([1.0, 0.05])
  student = teacher + 0.1 * rng.normal(size=teacher.shape) * teacher.std(0)
  t, s = jnp.asarray(teacher, jnp.float32), jnp.asarray(student, jnp.float32)
  per_dim = lambda j: float(objective.mean_matching_loss(t[:, j:j + 1], s[:, j:j + 1],
                                                         mutual=False, eps=0.0))
  assert per_dim(0) == pytest.approx(0.01, rel=0.1)
  assert per_dim(1) == pytest.approx(per_dim(0), rel=0.1)
  assert float(objective.mean_matching_loss(t, s, mutual=False, eps=0.0)) == pytest.approx(
      per_dim(0) + per_dim(1), rel=1e-5)
  assert float(objective.mean_matching_loss(t, t, mutual=False)) == 0.0


@pytest.mark.parametrize("mutual", [False, True])
def test_mean_matching_trains_the_teacher_only_when_mutual(mutual):
  rng = np.random.default_rng(2)
  t, s = (jnp.asarray(rng.normal(size=(8, 3)), jnp.float32) for _ in range(2))
  g_t, g_s = jax.grad(lambda a, b: objective.mean_matching_loss(a, b, mutual=mutual),
                      argnums=(0, 1))(t, s)
  assert np.abs(g_s).max() > 0 and (np.abs(g_t).max() > 0) == mutual


@pytest.mark.slow
def test_closed_loop_loss_sums_its_terms_and_routes_gradients(tiny_models, tiny_params):
  config = config_lib.base_config()
  process = diffusion.process(config.diffusion)
  x0 = jax.random.uniform(jax.random.key(3), (4, 16, 16, 3), minval=-1, maxval=1)
  obj = config.objective
  obj.w_vae, obj.w_dt, obj.w_dt_mean = 0.5, 2.0, 0.25

  def loss(p, beta=3.0):
    return objective.closed_loop_loss(p, tiny_models, process, obj, jnp.float32(beta), x0,
                                      jax.random.key(4))

  # Jitted: one compile instead of one per op (33 s -> 20 s for this test here).
  (total, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(tiny_params)
  np.testing.assert_allclose(aux["loss_vae"], aux["vae_nll"] + 3.0 * aux["vae_kl"], rtol=1e-6)
  np.testing.assert_allclose(
      total, aux["loss_diff"] + 0.5 * aux["loss_vae"] + 2.0 * aux["loss_dt"]
      + 0.25 * aux["loss_dt_mean"], rtol=1e-6)
  assert float(aux["loss_dt_mean"]) > 0
  assert all(np.isfinite(float(v)) for v in aux.values())
  for branch in ("diffae", "vae", "head"):
    assert float(train_step._norm(grads[branch])) > 0, branch  # pylint: disable=protected-access
  # The encoder learns from L_dt: its gradient changes with w_dt.
  obj.w_dt, obj.w_dt_mean = 0.0, 0.0
  grads0 = jax.jit(jax.grad(lambda p: loss(p)[0]))(tiny_params)
  enc = lambda g: np.asarray(jax.tree.leaves(g["diffae"]["encoder"])[0])
  assert np.abs(enc(grads) - enc(grads0)).max() > 0


def test_each_branch_is_clipped_on_its_own():
  """Huge VAE gradients do not shrink the Diff-AE's (or the head's) gradient."""
  params = {"diffae": jnp.zeros(3), "vae": jnp.zeros(3), "head": jnp.zeros(2)}
  grads = {"diffae": jnp.array([3.0, 4.0, 0.0]), "vae": jnp.full(3, 1e4),
           "head": jnp.array([0.1, 0.0])}
  clip = train_step.clip_per_branch(1.0)
  clipped, _ = clip.update(grads, clip.init(params))
  np.testing.assert_allclose(clipped["diffae"], [0.6, 0.8, 0.0], rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(clipped["vae"]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(clipped["head"], [0.1, 0.0], rtol=1e-6)


def _train_steps(config, models, num_steps=3):
  mesh = parallel.data_mesh()
  state = train_step.init_state_on_mesh(config, models, jax.random.key(0), mesh)
  step = train_step.make_train_step(config, models, mesh)
  images = jax.random.uniform(jax.random.key(1), (4, 16, 16, 3), minval=-1, maxval=1)
  for _ in range(num_steps):
    state, aux = step(state, {"image": images}, jax.random.key(2))
  return jax.device_get(state), jax.device_get(aux)


@pytest.mark.slow
def test_a_branch_trained_alone_is_that_branch_of_the_open_loop(test_config, tiny_models):
  """With the teacher under stop-gradient and a constant beta, CL-Dis trains
  its VAE exactly as the VAE alone does (the baseline is the same network and
  draws); the Diff-AE alone leaves the VAE and head untouched."""
  open_loop = test_config.copy_and_resolve_references()
  open_loop.objective.controller.kind = "constant"
  fresh = models_lib.init_params(tiny_models, jax.random.key(0))
  both, _ = _train_steps(open_loop, tiny_models)
  vae_alone, aux = _train_steps(config_lib.apply_overrides(
      open_loop, config_lib.nested({"objective.branches": ("vae",)})), tiny_models)
  chex.assert_trees_all_equal(vae_alone.params["vae"], both.params["vae"])
  chex.assert_trees_all_equal(vae_alone.params["diffae"], fresh["diffae"])
  assert float(aux["loss_diff"]) == float(aux["loss_dt"]) == 0.0
  diffae_alone, aux = _train_steps(config_lib.apply_overrides(
      open_loop, config_lib.nested({"objective.branches": ("diffae",)})), tiny_models)
  chex.assert_trees_all_equal(diffae_alone.params["vae"], fresh["vae"])
  chex.assert_trees_all_equal(diffae_alone.params["head"], fresh["head"])
  assert float(aux["loss"]) == float(aux["loss_diff"]) > 0


def test_the_correlation_penalty_is_scale_free():
  """A copy of an active dim at 1/100 of its amplitude costs like a full copy;
  independent dims cost (almost) nothing."""
  x = jax.random.normal(jax.random.key(0), (4096, 3))
  assert float(objective.correlation_penalty(x)) < 1e-3
  loud = x.at[:, 2].set(x[:, 0])
  quiet = x.at[:, 2].set(0.01 * x[:, 0])
  np.testing.assert_allclose(objective.correlation_penalty(quiet),
                             objective.correlation_penalty(loud), rtol=2e-2)
  assert float(objective.correlation_penalty(loud)) == pytest.approx(2 / 6, rel=1e-2)
