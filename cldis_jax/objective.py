"""The closed-loop objective: loss terms of both branches, the distillation link,
and the beta controllers of the feedback link. Pure functions of arrays.

  L = L_diff + w_vae * L_vae + w_dt * L_dt  (+ w_decorrelate * corr^2 of mu_s)
  L_diff = E_t,eps ||eps_theta(x_t, t, c) - eps||^2  (t uniform; c = E(x0) or expand(mu_s))
  L_vae  = recon(x0 | z_v) + beta_k * KL(q(z_v | x0) || N(0, I))
  L_dt   = KL( sg[q(z_v | x0)] || N(mu_s, sigma_s^2) ),  (mu_s, log sigma_s^2) = H(E(x0))
           (+ w_dt_mean * sum_j E_b[(mu_s - mu_v)_j^2] / Var_b(mu_v)_j, the means at their scale)

What is verified and what is ours (docs/method.md): CL-Dis is known to
distill the VAE latent into the Diff-AE code with a KL loss and to adapt the
VAE's disentanglement pressure from the diffusion branch. The exact feedback
law, the loss weights and the gradient direction of L_dt are not published;
the controllers below are our reconstruction and every choice is a config
switch (`config.objective`).

Controllers (`controller.kind`), all of the ControlVAE PI form. With a
"pressure" u (positive: raise beta):

  P_k = Kp * sigmoid(u_k)            (ControlVAE's Kp / (1 + exp(e_k)), e = -u)
  I_k = clip(I_{k-1} + Ki * u_k, -Kp, beta_max - beta_min)     (anti-windup)
  beta_{k+1} = clip(beta_min + P_k + I_k, beta_min, beta_max)

- "constant": beta = beta_init, always (the open-loop ablation).
- "pi_kl": ControlVAE on the VAE's own KL: u = EMA(KL) - C_k with the set
  point C_k = min(kl_start + kl_step * (k // kl_period), kl_max).
- "diffusion_feedback": u = r* - r_k with r_k = EMA(L_diff) /
  L_diff_ref, the reference being the EMA at the end of the controller's
  warm-up. While the diffusion branch fits better than r* times its reference,
  beta rises; when the distilled constraint hurts the diffusion fit, it falls.
- "diffusion_capacity": u = EMA(KL) - C_k with C_k = capacity * EMA(I_diff),
  I_diff the nats the semantic code saves the denoiser
  (`diffusion_information`), capped at kl_max.
- "distillation_feedback": u = EMA(L_dt) - dt_target: beta rises while the
  Diff-AE's distilled code lags the VAE's, and falls once it has caught up.
- "diffusion_paced" (default): u = EMA(KL) - C_k with the capacity C_k = kl_max *
  clip(1 - EMA(L_diff) / L_diff_ref, 0, 1): the VAE may hold as many nats as
  the share of its initial error the diffusion branch has removed allows
  (Burgess et al.'s capacity, raised by the diffusion branch's progress
  instead of a clock). While the VAE's KL runs ahead of the diffusion branch,
  beta rises; once the capacity has opened past it, beta falls, and it
  settles where KL = C. Its state keeps EMA(L_diff) in `ema` and EMA(KL) in
  `signal`.

`branches` trains one branch alone (no links): the study's baselines.

ControlVAE freezes its integrator while beta sits below its floor; clamping
the integral to the range beta can actually use does the same at both bounds,
so a long saturation never delays the way back. During the warm-up beta stays
at beta_init. The state enters the loss as a constant and is updated after
it, so no gradient flows through beta.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cldis_jax import diffusion, distributions, errors, models as models_lib

CONTROLLERS = ("constant", "pi_kl", "diffusion_feedback", "diffusion_capacity",
               "distillation_feedback", "diffusion_paced")
BRANCHES = ("diffae", "vae")


class ControllerState(NamedTuple):
  """Float32 scalars. `beta` is the value the next step's loss uses."""
  beta: jax.Array
  integral: jax.Array
  ema: jax.Array       # EMA of the measured quantity (L_diff, KL or L_dt)
  # what the set point derives from: L_diff at the end of warm-up
  # (diffusion_feedback), the EMA of the diffusion information (diffusion_capacity)
  reference: jax.Array
  signal: jax.Array    # what the controller compared with its set point
  setpoint: jax.Array
  count: jax.Array     # measurements so far (int32)


def check_controller(c) -> None:
  if c.kind not in CONTROLLERS:
    raise errors.ConfigError(f"objective.controller.kind = {c.kind!r} is not a controller; "
                             f"valid: {', '.join(CONTROLLERS)}")
  if not 0 <= c.beta_min <= c.beta_init <= c.beta_max:
    raise errors.ConfigError(
        "objective.controller needs 0 <= beta_min <= beta_init <= beta_max, got "
        f"beta_min={c.beta_min}, beta_init={c.beta_init}, beta_max={c.beta_max}")
  if not 0 <= c.ema_decay < 1:
    raise errors.ConfigError(f"objective.controller.ema_decay = {c.ema_decay} must be in [0, 1)")


def check_objective(obj) -> None:
  """config.objective: valid branches and a controller that has its signal."""
  branches = tuple(obj.branches)
  if not branches or any(b not in BRANCHES for b in branches) or len(set(branches)) < len(
      branches):
    raise errors.ConfigError(f"objective.branches = {branches!r}; valid: a non-empty subset of "
                             f"{BRANCHES} (both: CL-Dis; one: that branch trained alone)")
  c = obj.controller
  check_controller(c)
  if c.kind != "constant" and "vae" not in branches:
    raise errors.ConfigError(f"objective.controller.kind = {c.kind!r} sets the VAE's beta, but "
                             f"objective.branches = {branches!r} has no VAE; use 'constant'")
  if obj.dt_direction not in DT_DIRECTIONS:
    raise errors.ConfigError(f"objective.dt_direction = {obj.dt_direction!r}; valid: "
                             f"{', '.join(DT_DIRECTIONS)}")
  if c.kind not in ("constant", "pi_kl") and "diffae" not in branches:
    raise errors.ConfigError(f"objective.controller.kind = {c.kind!r} needs the diffusion branch, "
                             f"but objective.branches = {branches!r}; use 'constant' or 'pi_kl'")


def init_controller(c) -> ControllerState:
  """The state before the first step: beta = beta_init, with the integral set so
  that the PI law with zero pressure also gives beta_init."""
  check_controller(c)
  f = lambda v: jnp.asarray(v, jnp.float32)
  return ControllerState(
      beta=f(c.beta_init), integral=f(c.beta_init - c.beta_min - 0.5 * c.kp),
      ema=f(0.0), reference=f(0.0), signal=f(0.0), setpoint=f(0.0),
      count=jnp.asarray(0, jnp.int32))


def kl_setpoint(c, step):
  """ControlVAE's staircase KL target."""
  return jnp.minimum(c.kl_start + c.kl_step * (step // c.kl_period), c.kl_max).astype(jnp.float32)


MEASURED = {"pi_kl": "kl", "diffusion_capacity": "kl", "diffusion_feedback": "diff_loss",
            "distillation_feedback": "dt_loss", "diffusion_paced": "diff_loss"}


def update_controller(c, state: ControllerState, *, diff_loss, kl, dt_loss=None,
                      diff_info=None) -> ControllerState:
  """One controller step from this step's batch means of L_diff, the VAE KL and
  L_dt (and, for diffusion_capacity, the diffusion branch's information in nats)."""
  if c.kind == "constant":
    return state._replace(count=state.count + 1)
  measured = dict(diff_loss=diff_loss, kl=kl, dt_loss=dt_loss)[MEASURED[c.kind]]
  measured = jnp.asarray(measured, jnp.float32)
  measured = jax.lax.stop_gradient(measured)
  first = state.count == 0
  smooth = lambda old, new: jnp.where(first, new, c.ema_decay * old + (1 - c.ema_decay) * new)
  ema = smooth(state.ema, measured)
  count = state.count + 1
  warm = count <= c.warmup_steps
  if c.kind == "pi_kl":
    active = jnp.bool_(True)
    reference = state.reference
    signal, setpoint = ema, kl_setpoint(c, state.count)
    pressure = signal - setpoint
  elif c.kind == "diffusion_capacity":
    active = ~warm
    reference = smooth(state.reference, jnp.asarray(diff_info, jnp.float32))
    signal = ema
    setpoint = jnp.clip(c.capacity * reference, 0.0, c.kl_max)
    pressure = signal - setpoint
  elif c.kind == "diffusion_paced":
    active = ~warm
    reference = jnp.where(warm, ema, state.reference)
    signal = smooth(state.signal, jnp.asarray(kl, jnp.float32))
    progress = jnp.clip(1.0 - ema / jnp.maximum(reference, 1e-12), 0.0, 1.0)
    setpoint = jnp.where(warm, 0.0, c.kl_max * progress)
    pressure = signal - setpoint
  elif c.kind == "distillation_feedback":
    active = ~warm
    reference = state.reference
    signal, setpoint = ema, jnp.float32(c.dt_target)
    pressure = signal - setpoint
  else:
    reference = jnp.where(warm, ema, state.reference)
    active = ~warm
    signal = ema / jnp.maximum(reference, 1e-12)
    setpoint = jnp.float32(c.setpoint)
    pressure = setpoint - signal
  integral = jnp.clip(state.integral + c.ki * pressure, -c.kp, c.beta_max - c.beta_min)
  beta = jnp.clip(c.beta_min + c.kp * jax.nn.sigmoid(pressure) + integral,
                  c.beta_min, c.beta_max)
  return ControllerState(
      beta=jnp.where(active, beta, state.beta).astype(jnp.float32),
      integral=jnp.where(active, integral, state.integral).astype(jnp.float32),
      ema=ema, reference=reference.astype(jnp.float32), signal=signal.astype(jnp.float32),
      setpoint=jnp.asarray(setpoint, jnp.float32), count=count)


DT_DIRECTIONS = ("forward", "reverse")


def distillation_loss(teacher_mu, teacher_logvar, mu_s, logvar_s, *, mutual: bool,
                      direction: str = "forward"):
  """Per-sample KL between the VAE posterior q_v and the student N(mu_s,
  sigma_s^2), summed over dims; the teacher is a constant unless `mutual`.

  "forward": KL(q_v || student), the usual distillation direction; the
  student may cover a teacher dim it cannot predict yet with a wide sigma_s,
  which also weakens the gradient its mean gets. "reverse": KL(student ||
  q_v); the mean's error is weighed by the teacher's precision, so the
  student cannot widen its way out of an informative dim."""
  if not mutual:
    teacher_mu = jax.lax.stop_gradient(teacher_mu)
    teacher_logvar = jax.lax.stop_gradient(teacher_logvar)
  if direction == "reverse":
    return distributions.kl_diag_gaussians(mu_s, logvar_s, teacher_mu, teacher_logvar)
  return distributions.kl_diag_gaussians(teacher_mu, teacher_logvar, mu_s, logvar_s)


def mean_matching_loss(teacher_mu, mu_s, *, mutual: bool, eps: float = 1e-4):
  """Sum over dims of the batch's E[(mu_s - mu_v)^2] / Var(mu_v): each dim's
  unexplained share (1 - R^2) of the teacher's means, at the means' own scale.

  L_dt weighs a dim's mean error by the posterior variance, so a teacher dim
  whose means spread 0.05 under a posterior of std ~1 costs the student
  almost nothing to get wrong; the metrics read the means on their own
  scale, so such a dim then carries leftovers of the active ones in mu_s.
  This term weighs every dim by the spread of the teacher's means instead.
  The teacher is a constant unless `mutual`; so is its variance, always."""
  if not mutual:
    teacher_mu = jax.lax.stop_gradient(teacher_mu)
  var = jax.lax.stop_gradient(jnp.var(teacher_mu, axis=0))
  return jnp.sum(jnp.mean(jnp.square(mu_s - teacher_mu), axis=0) / (var + eps))


def correlation_penalty(codes, eps: float = 1e-6):
  """Mean squared off-diagonal correlation between the dims of `codes` (B, d)
  over the batch: 0 when every pair is uncorrelated. Correlation is scale-free,
  so a low-amplitude copy of an active dim costs as much as a loud one."""
  centred = codes - jnp.mean(codes, axis=0)
  cov = centred.T @ centred / codes.shape[0]
  std = jnp.sqrt(jnp.diag(cov) + eps)
  corr = cov / (std[:, None] * std[None, :])
  d = codes.shape[1]
  off = corr * (1.0 - jnp.eye(d, dtype=corr.dtype))
  return jnp.sum(jnp.square(off)) / (d * (d - 1))


def diffusion_inputs(process: diffusion.Diffusion, x0, rng):
  """t ~ U{0..T-1}, eps ~ N(0, I) and x_t for the eps loss."""
  k_t, k_eps = jax.random.split(rng)
  t = jax.random.randint(k_t, (x0.shape[0],), 0, process.num_timesteps)
  eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
  return t, eps, process.q_sample(x0, t, eps)


def uses_diffusion_info(c) -> bool:
  """Whether the controller needs the diffusion branch's information estimate
  (an extra, gradient-free denoiser pass with shuffled codes)."""
  return c.kind == "diffusion_capacity"


def diffusion_information(process, eps, eps_pred, eps_pred_shuffled, t):
  """The nats by which the right code shortens the diffusion bound of x0
  against another image's code, per image: T * w_t * sum over pixels of
  (||eps - eps(x_t, t, c_other)||^2 - ||eps - eps(x_t, t, c)||^2), an
  estimate (t uniform) of how much information about x0 the semantic code
  carries for the denoiser. Batch mean, no gradient."""
  err = lambda e: jnp.sum(jnp.square(e - eps).reshape(eps.shape[0], -1), axis=-1)
  gain = err(eps_pred_shuffled) - err(eps_pred)
  w = process.elbo_weights()[t] * process.num_timesteps
  return jax.lax.stop_gradient(jnp.mean(w * gain))


def _zero():
  return jnp.zeros((), jnp.float32)


def closed_loop_loss(params, models, process, objective_config, beta, x0, rng):
  """The total loss and `aux` with every term (batch means), for one batch.

  `beta` is the controller's current value (a constant here). Returns
  (loss, aux) with loss_diff, loss_vae, vae_nll, vae_kl, loss_dt, beta, loss
  (and diff_info when the controller uses it). With `branches` naming one
  branch only, the other one and both links are skipped (the baselines);
  their terms are 0.
  """
  obj = objective_config
  use_diffae, use_vae = "diffae" in obj.branches, "vae" in obj.branches
  linked = use_diffae and use_vae
  k_diff, k_drop, k_z, k_code = jax.random.split(rng, 4)
  aux: dict[str, Any] = dict(loss_diff=_zero(), loss_vae=_zero(), vae_nll=_zero(),
                             vae_kl=_zero(), loss_dt=_zero(), beta=beta)
  loss = _zero()

  if use_vae:
    vae = models.vae.apply({"params": params["vae"]}, x0, k_z)
    nll, kl = jnp.mean(vae["nll"]), jnp.mean(vae["kl"])
    aux.update(vae_nll=nll, vae_kl=kl, loss_vae=nll + beta * kl)
    loss = loss + obj.w_vae * aux["loss_vae"]

  if use_diffae:
    t, eps, x_t = diffusion_inputs(process, x0, k_diff)
    z_sem = models.diffae.apply({"params": params["diffae"]}, x0, method="encode")
    noise = None
    if obj.sample_condition and models.head.condition_dim:
      noise = jax.random.normal(k_code, (x0.shape[0], models.head.latent_dim))
    cond = models_lib.condition(models, params, z_sem, noise)
    denoise = lambda c: models.diffae.apply(
        {"params": params["diffae"]}, x_t, t, c, train=True, method="denoise",
        rngs={"dropout": k_drop})
    eps_pred = denoise(cond)
    aux["loss_diff"] = jnp.mean(diffusion.eps_mse(eps_pred, eps))
    loss = loss + aux["loss_diff"]
    if uses_diffusion_info(obj.controller):
      shuffled = denoise(jax.lax.stop_gradient(jnp.roll(cond, 1, axis=0)))
      aux["diff_info"] = diffusion_information(process, eps, jax.lax.stop_gradient(eps_pred),
                                               jax.lax.stop_gradient(shuffled), t)

  if linked:
    mu_s, logvar_s = models.head.apply({"params": params["head"]}, z_sem)
    aux["loss_dt"] = jnp.mean(distillation_loss(vae["mu"], vae["logvar"], mu_s, logvar_s,
                                                mutual=obj.mutual, direction=obj.dt_direction))
    loss = loss + obj.w_dt * aux["loss_dt"]
    if obj.w_dt_mean:
      aux["loss_dt_mean"] = mean_matching_loss(vae["mu"], mu_s, mutual=obj.mutual)
      loss = loss + obj.w_dt_mean * aux["loss_dt_mean"]
    if obj.w_decorrelate:
      aux["loss_decorrelate"] = correlation_penalty(mu_s)
      loss = loss + obj.w_decorrelate * aux["loss_decorrelate"]
  aux["loss"] = loss
  return loss, aux
