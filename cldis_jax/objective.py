"""The closed-loop objective: loss terms of both branches and the distillation
link. Pure functions of arrays; the feedback link's beta controllers are in
`beta_controller.py`.

  L = L_diff + w_vae * L_vae + w_dt * L_dt  (+ w_decorrelate * corr^2 of mu_s)
  L_diff = E_t,eps ||eps_theta(x_t, t, c) - eps||^2  (t uniform; c = E(x0) or expand(mu_s))
           (Diff-AE's; other targets, weights and timestep draws: diffusion_loss.py)
  L_vae  = recon(x0 | z_v) + the co-pilot's regulariser at the controller's value
           (beta-VAE: beta_k * KL(q(z_v | x0) || N(0, I)); the others: copilots.py)
  L_dt   = KL( sg[q(z_v | x0)] || N(mu_s, sigma_s^2) ),  (mu_s, log sigma_s^2) = H(E(x0))
           (+ w_dt_mean * sum_j E_b[(mu_s - mu_v)_j^2] / Var_b(mu_v)_j, the means at their scale)

What is verified and what is ours (docs/method.md): CL-Dis is known to
distill the VAE latent into the Diff-AE code with a KL loss and to adapt the
VAE's disentanglement pressure from the diffusion branch. The exact feedback
law, the loss weights and the gradient direction of L_dt are not published;
the loss weights, the KL direction and the controllers are our
reconstruction, and every choice is a config switch (`config.objective`).

`branches` trains one branch alone (no links): the study's baselines.

With labelled factors (`model.labels`, docs/labels.md) the diffusion term is
ZeroDIM's pair of losses on the full and the labelled batch
(`labelled_terms`), and the distillation head reads the code's residual.
"""

from typing import Any

import jax
import jax.numpy as jnp

from cldis_jax import (beta_controller, copilots, diffusion, diffusion_loss, distributions,
                       errors, models as models_lib, subspaces)

BRANCHES = ("diffae", "vae")
DT_DIRECTIONS = ("forward", "reverse")
_SWAP_STREAM = 0x5a9  # seeds the swapped blocks apart from the step's other draws
_SHUFFLE_STREAM = 0xfac  # FactorVAE's shuffled codes, apart from the step's other draws
_DROP_STREAM = 0xd20  # the dropped codes, apart from the step's other draws


def check_objective(obj, copilot: str = "beta_vae") -> None:
  """config.objective: valid branches and a controller that has its signal
  (its range from the co-pilot `copilot` where the config leaves it None)."""
  branches = tuple(obj.branches)
  if not branches or any(b not in BRANCHES for b in branches) or len(set(branches)) < len(
      branches):
    raise errors.ConfigError(f"objective.branches = {branches!r}; valid: a non-empty subset of "
                             f"{BRANCHES} (both: CL-Dis; one: that branch trained alone)")
  c = copilots.controller_config(obj.controller, copilot)
  beta_controller.check_controller(c)
  if c.kind != "constant" and "vae" not in branches:
    raise errors.ConfigError(f"objective.controller.kind = {c.kind!r} sets the VAE's beta, but "
                             f"objective.branches = {branches!r} has no VAE; use 'constant'")
  if obj.dt_direction not in DT_DIRECTIONS:
    raise errors.ConfigError(f"objective.dt_direction = {obj.dt_direction!r}; valid: "
                             f"{', '.join(DT_DIRECTIONS)}")
  if c.kind not in ("constant", "pi_kl") and "diffae" not in branches:
    raise errors.ConfigError(f"objective.controller.kind = {c.kind!r} needs the diffusion branch, "
                             f"but objective.branches = {branches!r}; use 'constant' or 'pi_kl'")


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
  t, eps, x_t, _ = diffusion_loss.inputs(process, diffusion_loss.Settings(), x0, rng)
  return t, eps, x_t


def drop_codes(cond, rate: float, rng):
  """The condition with each row set to the null code (zeros) with
  probability `rate` (classifier-free guidance's training; 0: unchanged)."""
  if not rate:
    return cond
  keep = jax.random.uniform(rng, (cond.shape[0],)) >= rate
  return jnp.where(keep[:, None], cond, jnp.zeros_like(cond))


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


def closed_loop_loss(params, models, process, objective_config, beta, x0, rng,
                     supervised=None, swapping=None, copilot=copilots.Settings(), step=0,
                     recipe=diffusion_loss.Settings()):
  """The total loss and `aux` with every term (batch means), for one batch.

  `beta` is the controller's current value (a constant here): the pressure
  of the co-pilot `copilot` (copilots.Settings; `step` is its clock). Returns
  (loss, aux) with loss_diff, loss_vae, vae_nll, vae_kl, loss_dt, beta, loss
  (and diff_info when the controller uses it). With `branches` naming one
  branch only, the other one and both links are skipped (the baselines);
  their terms are 0. With labelled factors (`models.labels`), `supervised`
  holds the batch's labels, the labelled batch and the weights
  (`labelled_terms`), and the head reads the residual. With subspaces
  (config.subspaces), `swapping` holds the batch's region maps and the
  settings of the swap and independence terms (`subspaces.subspace_terms`).
  With FactorVAE's discriminator, the loss returned for differentiation adds
  the discriminator's loss (`loss_discriminator`, which reaches only its
  parameters) to aux["loss"]. The denoiser predicts `process.prediction`
  and L_diff is weighted and its timesteps drawn by `recipe`
  (diffusion_loss.Settings); a share objective.code_dropout of the
  conditions is the null code.
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
    loss_vae, loss_discriminator, terms = copilots.copilot_loss(
        models, params, copilot, vae, beta, step, jax.random.fold_in(rng, _SHUFFLE_STREAM))
    aux.update(terms, vae_nll=jnp.mean(vae["nll"]), vae_kl=jnp.mean(vae["kl"]),
               loss_vae=loss_vae)
    if copilots.has_discriminator(copilot.kind):
      aux["loss_discriminator"] = loss_discriminator
    loss = loss + obj.w_vae * loss_vae

  if use_diffae:
    output = lambda x_t, t, c: models.diffae.apply(
        {"params": params["diffae"]}, x_t, t, c, train=True, method="denoise",
        rngs={"dropout": k_drop})
    denoise = lambda x_t, t, c: process.eps_from(x_t, t, output(x_t, t, c))  # eps
    k_null = jax.random.fold_in(rng, _DROP_STREAM)
    if models.labels is None:
      t, eps, x_t, weight = diffusion_loss.inputs(process, recipe, x0, k_diff)
      z_sem = models_lib.semantic_code(models, params, x0)
      noise = None
      if obj.sample_condition and models.head.condition_dim:
        noise = jax.random.normal(k_code, (x0.shape[0], models.head.latent_dim))
      cond = drop_codes(models_lib.condition(models, params, z_sem, noise),
                        obj.get("code_dropout", 0.0), k_null)
      out = output(x_t, t, cond)
      eps_pred = process.eps_from(x_t, t, out)
      aux["loss_diff"] = jnp.mean(diffusion_loss.per_image_loss(process, recipe, out, x0, eps,
                                                                t, weight))
      loss = loss + aux["loss_diff"]
      if swapping is not None:
        conditioned = lambda z: models_lib.condition(
            models, params, z, None if noise is None else noise[:z.shape[0]])
        k_swap = jax.random.fold_in(rng, _SWAP_STREAM)  # the other draws as without swaps
        weighted, terms = subspaces.subspace_terms(swapping, denoise, z_sem, conditioned, x0,
                                                   x_t, t, eps_pred, process, k_swap)
        aux.update({f"loss_{k}": v for k, v in terms.items()})
        loss = loss + weighted
    else:
      terms, (t, eps, x_t, cond, eps_pred, z_sem) = labelled_terms(
          params, models, process, output, x0, supervised, k_diff, k_code, recipe)
      aux.update(terms)
      loss = loss + terms["loss_labelled"]
    if uses_diffusion_info(obj.controller):
      shuffled = denoise(x_t, t, jax.lax.stop_gradient(jnp.roll(cond, 1, axis=0)))
      aux["diff_info"] = diffusion_information(process, eps, jax.lax.stop_gradient(eps_pred),
                                               jax.lax.stop_gradient(shuffled), t)

  if linked:
    mu_s, logvar_s = models_lib.distilled(models, params, z_sem)
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
  return loss + aux.get("loss_discriminator", 0.0), aux


def entropy(logits):
  """Per-row entropy (nats) of softmax(logits)."""
  logp = jax.nn.log_softmax(logits)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def known_cross_entropy(logits, labels):
  """Mean cross-entropy over the rows whose label is known (>= 0); 0 if none."""
  known = labels >= 0
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.maximum(labels, 0)[:, None],
                            axis=-1)[:, 0]
  return jnp.sum(jnp.where(known, ce, 0.0)) / jnp.maximum(jnp.sum(known), 1)


def labelled_terms(params, models, process, output, x0, supervised, k_diff, k_noise,
                   recipe=diffusion_loss.Settings()):
  """ZeroDIM's two losses on the Diff-AE (eps loss as the reconstruction):

    full batch:     L_diff + w_decay * decay + [step >= warm-up] w_entropy * H
    labelled batch: L_diff + w_decay * decay + w_classify * sum_f CE_f
    total = full + w_supervised * labelled

  Both batches go through the encoder and the UNet (`output`, the raw
  denoiser; L_diff as `recipe` weighs it) in one call. `supervised`:
  labels (B, k), labelled_image (B_l, ...), labelled_labels (B_l, k), step,
  and the config.supervision weights. Returns (terms, (t, eps, x_t, the
  noisy code, eps_pred, the clean code) of the full batch)."""
  s, b = supervised, x0.shape[0]
  images = jnp.concatenate([x0, s["labelled_image"]])
  labels = jnp.concatenate([s["labels"], s["labelled_labels"]])
  t, eps, x_t, weight = diffusion_loss.inputs(process, recipe, images, k_diff)
  parts = models_lib.semantic_parts(models, params, images, labels)
  residual = parts["residual"]
  noisy = residual + s["residual_std"] * jax.random.normal(k_noise, residual.shape)
  cond = parts["code"].at[:, models_lib.residual_slice(models.labels)].set(noisy)
  out = output(x_t, t, cond)
  eps_pred = process.eps_from(x_t, t, out)
  mse = diffusion_loss.per_image_loss(process, recipe, out, images, eps, t, weight)
  decay = jnp.mean(jnp.square(residual), axis=-1)
  full, few = slice(0, b), slice(b, None)
  ent = sum(jnp.mean(entropy(l[full])) for l in parts["logits"]) / len(parts["logits"])
  ce = sum(known_cross_entropy(l[few], labels[few, f]) for f, l in enumerate(parts["logits"]))
  warm = (s["step"] >= s["entropy_warmup_steps"]).astype(jnp.float32)
  loss_full = jnp.mean(mse[full]) + s["w_decay"] * jnp.mean(decay[full]) + (
      warm * s["w_entropy"] * ent)
  loss_few = jnp.mean(mse[few]) + s["w_decay"] * jnp.mean(decay[few]) + s["w_classify"] * ce
  terms = dict(loss_diff=jnp.mean(mse[full]), loss_diff_labelled=jnp.mean(mse[few]),
               residual_decay=jnp.mean(decay[full]), entropy=ent, classify=ce,
               loss_labelled=loss_full + s["w_supervised"] * loss_few)
  return terms, (t[full], eps[full], x_t[full], cond[full], eps_pred[full],
                 parts["code"][full])
