"""The train state and the one jitted closed-loop step.

One step does everything on one global batch: both branches' losses, the
distillation link, gradients, Adam, the EMA of the parameters, and the
controller update of the feedback link. It is a plain `jax.jit` over a mesh
with a `data` axis: the batch sharded along it, the state replicated and
donated. XLA inserts the gradient all-reduce (the loss is a global batch mean),
so the same program runs on 1 CPU, 4 simulated devices or a pod and gives the
same update.

Randomness: one root key (from config.seed), folded with the step inside the
step, so a resumed run draws exactly the numbers an uninterrupted one would.
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from cldis_jax import (beta_controller, copilots, diffusion, diffusion_loss, errors, memo,
                       models as models_lib, objective, parallel, subspaces, supervision)

BRANCHES = ("diffae", "vae", "head")
LABELLED_BRANCHES = BRANCHES + ("labels",)  # with labelled factors (model.labels)


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict[str, Any]
  ema_params: dict[str, Any]
  opt_state: Any
  controller: beta_controller.ControllerState


SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optim, num_steps: int):
  """A linear warm-up over optim.warmup_steps, then optim.learning_rate held
  ("constant") or decayed along a half cosine to 0 at step `num_steps`
  ("cosine"; the run's train.num_steps)."""
  if optim.schedule not in SCHEDULES:
    raise errors.ConfigError(f"optim.schedule = {optim.schedule!r}; valid: {', '.join(SCHEDULES)}")
  warmup = max(optim.warmup_steps, 0)
  if optim.schedule == "cosine":
    if num_steps <= warmup:
      raise errors.ConfigError(f"optim.schedule = 'cosine' needs train.num_steps = {num_steps} "
                               f"above optim.warmup_steps = {optim.warmup_steps}")
    return optax.warmup_cosine_decay_schedule(0.0, optim.learning_rate, warmup, num_steps)
  if warmup == 0:
    return optax.constant_schedule(optim.learning_rate)
  return optax.linear_schedule(0.0, optim.learning_rate, warmup)


def branches_of(config) -> tuple[str, ...]:
  branches = LABELLED_BRANCHES if supervision.enabled(config) else BRANCHES
  return branches + (("discriminator",) if copilots.has_discriminator(config.model.copilot)
                     else ())


def clip_per_branch(max_norm: float, branches=BRANCHES) -> optax.GradientTransformation:
  """Global-norm clipping of each branch (diffae, vae, head[, labels]) on its own.

  The beta-VAE's summed-over-pixels loss has gradients orders of magnitude
  larger than the eps loss's; one global norm over both would clip the
  Diff-AE's update to almost nothing.
  """
  return optax.multi_transform({b: optax.clip_by_global_norm(max_norm) for b in branches},
                               {b: b for b in branches})


def _is_table(path, _) -> str:
  """'tables' for the labelled factors' embedding tables, 'net' for the rest."""
  keys = [getattr(k, "key", None) for k in path]
  return "tables" if keys[0] == "labels" and str(keys[-1]).startswith("table_") else "net"


def make_optimizer(optim, num_steps: int, branches=BRANCHES,
                   table_learning_rate: float | None = None,
                   discriminator_optim=None) -> optax.GradientTransformation:
  """Per-branch clipping, then Adam(W) on `learning_rate_schedule`.

  With `table_learning_rate`, the labelled factors' embedding tables take
  their own Adam at that rate (the same warm-up), or stay at their initial
  values when it is 0. With `discriminator_optim`, FactorVAE's discriminator
  takes its own plain Adam (no clipping, no warm-up, as the library's).
  """
  main = _main_optimizer(optim, num_steps, branches, table_learning_rate)
  if discriminator_optim is None:
    return main
  d = discriminator_optim
  return optax.multi_transform(
      {"main": main, "discriminator": optax.adam(d.learning_rate, b1=d.b1, b2=d.b2, eps=d.eps)},
      lambda params: {k: "discriminator" if k == "discriminator" else "main" for k in params})


def _main_optimizer(optim, num_steps, branches, table_learning_rate):
  def adamw(rate):
    return optax.adamw(rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                       weight_decay=optim.weight_decay)

  schedule = learning_rate_schedule(optim, num_steps)
  adam = adamw(schedule)
  if table_learning_rate is not None:
    ratio = table_learning_rate / optim.learning_rate
    tables = adamw(lambda count: ratio * schedule(count)) if ratio else optax.set_to_zero()
    adam = optax.multi_transform(
        {"net": adam, "tables": tables},
        lambda params: jax.tree_util.tree_map_with_path(_is_table, params))
  if not optim.grad_clip_norm:
    return adam
  return optax.chain(clip_per_branch(optim.grad_clip_norm, branches), adam)


def optimizer_of(config) -> optax.GradientTransformation:
  """The training optimizer of `config` (with labelled factors, the tables' rate)."""
  tables = config.supervision.table_learning_rate if supervision.enabled(config) else None
  discriminator = (config.objective.copilot.discriminator_optim
                   if copilots.has_discriminator(config.model.copilot) else None)
  return make_optimizer(config.optim, config.train.num_steps, branches_of(config), tables,
                        discriminator)


def controller_of(config):
  """config.objective.controller with the co-pilot's defaults filled in."""
  return copilots.controller_config(config.objective.controller, config.model.copilot)


def averaged(params: dict) -> dict:
  """The parameters the EMA keeps: all but FactorVAE's discriminator, which
  only trains (and is the largest part of the step at small scale)."""
  return {k: v for k, v in params.items() if k != "discriminator"}


def create_train_state(config, models, rng) -> TrainState:
  params = models_lib.init_params(models, rng)
  return TrainState(
      step=jnp.asarray(0, jnp.int32), params=params,
      ema_params=jax.tree.map(jnp.copy, averaged(params)),
      opt_state=optimizer_of(config).init(params),
      controller=beta_controller.init_controller(controller_of(config)))


def init_state_on_mesh(config, models, rng, mesh) -> TrainState:
  """The initial state, created by one jitted call directly in replicated form."""
  return _make_init(config, models, mesh)(rng)


@memo.per_config
def _make_init(config, models, mesh):
  return jax.jit(functools.partial(create_train_state, config, models),
                 out_shardings=parallel.replicated(mesh))


def abstract_state(config, models, mesh) -> TrainState:
  """Shapes, dtypes and shardings of the train state (for restoring), no allocation."""
  shapes = jax.eval_shape(functools.partial(create_train_state, config, models),
                          jax.random.key(0))
  sharding = parallel.replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


def _norm(tree):
  return optax.tree.norm(tree).astype(jnp.float32)


def supervised_inputs(config, batch, step):
  """The labels and weights `objective.labelled_terms` reads, or None."""
  if "labels" not in batch:
    return None
  keys = ("w_supervised", "w_classify", "w_entropy", "w_decay", "residual_std",
          "entropy_warmup_steps")
  return dict({k: config.supervision[k] for k in keys}, step=step, labels=batch["labels"],
              labelled_image=batch["labelled_image"],
              labelled_labels=batch["labelled_labels"])


@memo.per_config
def make_train_step(config, models, mesh):
  """(state, batch, rng_root) -> (state, aux), jitted; `state` is donated.

  `batch` is {"image"}, with labelled factors also "labels",
  "labelled_image" and "labelled_labels", and with subspaces "region"
  (`supervision.step_inputs`).

  aux holds every loss term, beta, the controller's signal, set point and
  error, the learning rate, gradient/parameter/update norms (total and per
  branch) and `finite` (loss and gradients finite), which the training loop
  checks before it saves or logs anything.
  """
  process = diffusion.process(config.diffusion)
  tx = optimizer_of(config)
  schedule = learning_rate_schedule(config.optim, config.train.num_steps)
  ema_decay = config.optim.ema_decay
  obj = config.objective
  controller_config = controller_of(config)
  sign = copilots.check_kind(config.model.copilot).sign
  copilot = copilots.settings(config)
  recipe = diffusion_loss.settings(config.diffusion)

  def step(state: TrainState, batch, rng_root):
    rng = jax.random.fold_in(rng_root, state.step)
    loss_fn = functools.partial(objective.closed_loop_loss, models=models, process=process,
                                objective_config=obj, beta=state.controller.beta,
                                x0=batch["image"], rng=rng,
                                supervised=supervised_inputs(config, batch, state.step),
                                swapping=subspaces.swap_inputs(config, batch),
                                copilot=copilot, step=state.step, recipe=recipe)
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p,
                       state.ema_params, averaged(params))
    controller = beta_controller.update_controller(controller_config, state.controller,
                                                   diff_loss=aux["loss_diff"], kl=aux["vae_kl"],
                                                   dt_loss=aux["loss_dt"],
                                                   diff_info=aux.get("diff_info"), sign=sign)
    finite = jnp.isfinite(aux["loss"]) & jnp.isfinite(_norm(grads))
    new = state.replace(step=state.step + 1, params=params, ema_params=ema,
                        opt_state=opt_state, controller=controller)
    aux = dict(aux, finite=finite, learning_rate=schedule(state.step),
               controller_signal=controller.signal, controller_setpoint=controller.setpoint,
               controller_error=controller.setpoint - controller.signal,
               grad_norm=_norm(grads), param_norm=_norm(params), update_norm=_norm(updates))
    for b in grads:
      aux[f"grad_norm_{b}"] = _norm(grads[b])
    return new, aux

  replicated = parallel.replicated(mesh)
  return jax.jit(step, in_shardings=(replicated, parallel.batch_sharding(mesh), replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)
