"""The navigation program (`--mode=navigate`): `run(config, workdir)` learns
directions in z_sem on the latest training checkpoint's EMA weights, with
the model frozen (the method and its loss: `navigation.py`).

It runs on one device (one process) and holds the workdir's writer lock.
`<workdir>/navigation/` gets orbax checkpoints (resumed from, and saved on
SIGTERM), TensorBoard scalars (loss, its terms, training and held-out
accuracy), a traversal grid of the learned directions and, when it completes,
`metrics.json`.
"""

import json
import os
import time

from absl import logging
import jax
import numpy as np

from cldis_jax import (checkpoint, codes, data, grids, loop, navigation, trained,
                       writer as writer_lib)


def run(config, workdir: str) -> dict:
  """`--mode=navigate` on `workdir`'s latest training checkpoint (EMA weights);
  returns the metrics."""
  with trained.writing("navigate", workdir, config) as model:
    return _navigate(model, workdir)


def _navigate(model: trained.Run, workdir: str) -> dict:
  config, n, t0 = model.config, model.config.navigate, time.perf_counter()
  nav = navigation.build(config)
  out_dir = os.path.join(workdir, navigation.SUBDIR)
  ckpt = checkpoint.Checkpoints(workdir, keep=n.keep_checkpoints,
                                subdir=os.path.join(navigation.SUBDIR, "checkpoints"))
  writer = writer_lib.create_default_writer(out_dir)
  with loop.holding(ckpt, writer) as stop:
    state = _start(model, nav, ckpt)
    accuracy_fn = navigation.make_accuracy(config, model.models, nav)
    params = jax.device_put(model.params)  # once, not at every jitted call
    state, status, last = _loop(model, params, nav, state, accuracy_fn, ckpt, writer, stop)
    done = int(state.step)
    if ckpt.latest_step() != done:
      ckpt.save(done, state, config)
    ckpt.wait()
    if last is None or status != "completed":
      last = navigation.held_out_accuracy(config, accuracy_fn, state, params, model.source)
    grid = navigation.traversal_grid(config, model.models, params, nav, state, model.source)
    grid_path = grids.save_png(os.path.join(out_dir, f"traverse_{done:08d}.png"), grid,
                               grids.scale_for(config.model.image_size))
    writer.write_images(done, {"navigate/traverse": grid})
  a, sigma = navigation.directions_of(config, nav, state)
  gram = a @ a.T
  metrics = dict(status=status, step=done, model_step=int(state.model_step),
                 wall_time_s=time.perf_counter() - t0, num_directions=len(a),
                 parameterization=n.parameterization, decode_steps=n.decode_steps,
                 t_start=n.t_start, **last, direction_sigma=sigma.tolist(),
                 gram_max_offdiag=float(np.abs(gram - np.diag(np.diag(gram))).max()),
                 norm_max_error=float(np.abs(np.linalg.norm(a, axis=1) - 1).max()),
                 grid=grid_path, checkpoint=os.path.join(ckpt.directory, str(done)))
  if status == "completed":
    writer_lib.write_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(metrics, indent=2))
  return metrics


def _start(model: trained.Run, nav, ckpt) -> navigation.NavState:
  """The newest intact navigation checkpoint (setting damaged newer ones
  aside, as training does), else a fresh state on z_sem's moments."""
  config = model.config
  step, state = ckpt.restore_latest_intact(navigation.abstract_state(config, nav))
  if step is None:
    z_mean, z_cov = codes.zsem_moments(model.models, model.params, model.source,
                                       num_images=config.navigate.reference_images,
                                       seed=config.seed)
    return navigation.init_state(config, nav, jax.random.key(config.seed), z_mean, z_cov,
                                 model.step)
  logging.info("resumed navigation from %s/%d", ckpt.directory, step)
  if int(state.model_step) != model.step:
    logging.warning("the navigation checkpoint was trained on model step %d; the latest "
                    "training checkpoint is %d. Continuing on the latest.",
                    int(state.model_step), model.step)
  return state


def _loop(model: trained.Run, params, nav, state, accuracy_fn, ckpt, writer, stop):
  """Steps to `navigate.num_steps` or a stop signal -> (state, status, the
  last held-out accuracy or None). `params`: the model's, on the device.
  Each step's finiteness is checked one step behind, and always before
  anything is logged or saved (as in training)."""
  config, n, source = model.config, model.config.navigate, model.source
  step_fn = navigation.make_step(config, model.models, nav)
  rng = jax.random.key(config.seed + 1)
  window, last, guard = loop.Window(int(state.step)), None, loop.FiniteGuard(ckpt.latest_step())
  for step in range(int(state.step), n.num_steps):
    rows = navigation.batch_rows(config.seed, step, len(source), n.batch_size)
    state, aux = step_fn(state, params, data.images_at(source, rows), rng)
    guard.stepped(step, aux)
    done = step + 1
    window.aux.append(aux)
    preempted = stop.reached(done)
    log_due = loop.due(done, n.log_every, n.num_steps)
    save_due = loop.due(done, n.checkpoint_every) or preempted
    if log_due:
      guard.check()  # never log a bad step (nor save one: guard.save)
      values, rate = window.report(done)
      last = navigation.held_out_accuracy(config, accuracy_fn, state, params, source)
      _log(writer, done, n.num_steps, loop.mean_aux(values), last, rate)
      window.restart(done)  # not timing the held-out pass
    if save_due:
      guard.save(ckpt, done, state, config)
    if preempted:
      logging.warning("navigation stopped by preemption at step %d; checkpoint saved", done)
      return state, "preempted", last
  guard.check()
  return state, "completed", last


def _log(writer, done: int, num_steps: int, means: dict, held_out: dict, rate: float):
  scalars = {f"navigate/{k}": v for k, v in means.items()}
  scalars.update({"navigate/held_out_accuracy": held_out["accuracy"],
                  "navigate/held_out_shift_mae": held_out["shift_mae"],
                  "navigate/steps_per_s": rate})
  writer.write_scalars(done, scalars)
  logging.info("navigate step %d/%d  loss %.4f (ce %.4f, l1 %.4f)  accuracy %.3f "
               "(held out %.3f)  %.2f steps/s", done, num_steps, means["loss"],
               means["loss_cls"], means["loss_shift"], means["accuracy"],
               held_out["accuracy"], rate)
