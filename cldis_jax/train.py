"""The training program: `train_and_evaluate(config, workdir)`.

It builds the models, data and mesh, resumes from the latest checkpoint in
`workdir` (or initialises), and runs the closed-loop step until
`train.num_steps`. Around the step, on the host:

- every `train.log_every` steps: the mean of every aux term over the window
  to TensorBoard (`workdir/events.out.tfevents.*`, process 0) and the log,
  with steps/s, images/s and ETA;
- every `train.checkpoint_every` steps and at the end: an async orbax
  checkpoint in `workdir/checkpoints/<step>` (the last `keep_checkpoints`);
- every `samples.every` steps and at the end: picture grids from the EMA
  parameters in `workdir/samples/*.png` and to TensorBoard;
- at the end: `workdir/metrics.json`.

A non-finite loss or gradient stops the run with a FloatingPointError naming
the step and the terms, before anything is saved from that step on. SIGTERM
(preemption) saves a checkpoint at the current step and returns normally; on
several processes JAX's preemption service picks a step all of them reach.
"""

import json
import os
import time

from absl import logging
from clu import parameter_overview
import jax
import numpy as np

from cldis_jax import (checkpoint, config_lib, data, evaluate, models as models_lib, objective,
                       parallel, preemption, samples, train_step, writer as writer_lib)


def _check_finite(step: int, aux, last_saved) -> None:
  if bool(aux["finite"]):
    return
  values = jax.device_get(aux)
  bad = [f"{k}={float(v)}" for k, v in values.items()
         if k != "finite" and not np.isfinite(v)]
  raise FloatingPointError(
      f"non-finite values at step {step}: {', '.join(bad)}. Stopped before saving "
      f"anything from this step; the last checkpoint (step {last_saved}) is intact.")


def _mean_aux(window) -> dict[str, float]:
  values = jax.device_get(window)
  return {k: float(np.mean([v[k] for v in values])) for k in values[0] if k != "finite"}


def format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the
  final metrics also written to `workdir/metrics.json`."""
  config_lib.check_config(config)
  objective.check_objective(config.objective)
  mesh = parallel.data_mesh()
  parallel.check_batch_divides(config.train.batch_size, mesh)
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  models = models_lib.build_models(config.model)
  source = data.build_source(config.data, image_size=config.model.image_size,
                             channels=config.model.in_channels)
  pipeline = data.build_pipeline(config, source, mesh)
  # Made by a jitted call so that the keys are replicated over every process.
  rng_init, rng_train = jax.jit(lambda: jax.random.split(jax.random.key(config.seed)),
                                out_shardings=parallel.replicated(mesh))()

  ckpt = checkpoint.Checkpoints(workdir, keep=config.train.keep_checkpoints,
                                async_save=config.train.async_checkpoints)
  writer = writer_lib.create_default_writer(workdir, just_logging=not lead)
  stop = preemption.StopSignal()
  try:
    return _train(config, workdir, models, source, pipeline, mesh, rng_init, rng_train,
                  ckpt, writer, stop)
  finally:
    stop.close()
    ckpt.close()
    writer.flush()
    writer.close()


def _train(config, workdir, models, source, pipeline, mesh, rng_init, rng_train, ckpt,
           writer, stop) -> dict:
  lead = jax.process_index() == 0
  last_saved = ckpt.latest_step()
  if last_saved is not None:
    state = ckpt.restore(train_step.abstract_state(config, models, mesh))
    logging.info("resumed from %s/%d", ckpt.directory, last_saved)
  else:
    state = train_step.init_state_on_mesh(config, models, rng_init, mesh)
    writer.write_hparams(_flatten(config.to_dict()))
  if lead:
    logging.info("parameters:\n%s", parameter_overview.get_parameter_overview(
        jax.device_get(state.params), include_stats=False))

  num_steps, batch = config.train.num_steps, config.train.batch_size
  start = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.json")
  if start >= num_steps and os.path.exists(metrics_path):
    logging.info("already trained to step %d (train.num_steps = %d)", start, num_steps)
    with open(metrics_path) as f:
      return json.load(f)

  step_fn = train_step.make_train_step(config, models, mesh)
  previews = parallel.replicate(data.spread_images(source, config.samples.num_images), mesh)

  def write_samples(step):
    grid = samples.sample_grids(models, config, state.ema_params, previews)
    if lead:
      samples.save_grids(workdir, step, grid, config.model.image_size)
    writer.write_images(step, grid)

  def write_evaluation(step):
    if jax.process_count() > 1:  # the evaluators read and encode on one host
      logging.warning("evaluate.every is ignored with %d processes; run --mode=evaluate "
                      "on the checkpoint instead", jax.process_count())
      return
    summary = evaluate.evaluate_params(config, models, jax.device_get(state.ema_params),
                                       source, os.path.join(workdir, "eval", str(step)),
                                       step, writer)
    evaluation.update(step=step, **evaluate.headline(summary))

  evaluation = {}
  eval_every = config.evaluate.every
  save_every = config.train.checkpoint_every
  window, scalars, pending, status, first_step_s = [], {}, None, "completed", None
  t_start = t_log = time.perf_counter()
  s_log = start
  for step, batch_arrays in zip(range(start, num_steps), pipeline.iterate(start, num_steps)):
    state, aux = step_fn(state, batch_arrays["image"], rng_train)
    if first_step_s is None:
      jax.block_until_ready(aux)
      first_step_s = time.perf_counter() - t_start
      logging.info("first step (with compilation) took %.1f s", first_step_s)
      t_log, s_log = time.perf_counter(), step + 1
    if pending is not None:  # one step behind, so dispatch runs ahead
      _check_finite(*pending, last_saved)
    pending = (step, aux)
    window.append(aux)
    done = step + 1
    preempted = stop.reached(done)
    log_due = done % config.train.log_every == 0 or done == num_steps
    save_due = bool(save_every) and done % save_every == 0
    sample_due = bool(config.samples.every) and done % config.samples.every == 0
    eval_due = bool(eval_every) and done % eval_every == 0
    if log_due or save_due or sample_due or eval_due or preempted:
      _check_finite(*pending, last_saved)  # never save or log a bad step
    if log_due:
      now = time.perf_counter()
      rate = (done - s_log) / (now - t_log) if done > s_log else float("nan")
      scalars = dict(_mean_aux(window), steps_per_s=rate, images_per_s=rate * batch)
      writer.write_scalars(done, scalars)
      if lead:
        _log_progress(done, num_steps, scalars)
      window, t_log, s_log = [], now, done
    if save_due or preempted:
      ckpt.save(done, state, config)
      last_saved = done
    if sample_due:
      write_samples(done)
    if eval_due:
      write_evaluation(done)
    if preempted:
      status = "preempted"
      logging.warning("stopped by preemption at step %d; checkpoint saved", done)
      break
  if pending is not None:
    _check_finite(*pending, last_saved)
  done = int(state.step)
  if status == "completed" and last_saved != done:
    ckpt.save(done, state, config)
    last_saved = done
  if status == "completed" and config.samples.every and not (
      done > start and done % config.samples.every == 0):
    write_samples(done)
  if status == "completed" and eval_every and not (done > start and done % eval_every == 0):
    write_evaluation(done)
  ckpt.wait()
  elapsed = time.perf_counter() - t_start
  metrics = dict(
      status=status, step=done, num_steps=num_steps, steps_this_run=done - start,
      wall_time_s=elapsed, first_step_s=first_step_s,
      train=_mean_aux(window) if window else scalars,
      controller={k: float(v) for k, v in state.controller._asdict().items()},
      checkpoint=os.path.join(ckpt.directory, str(last_saved)))
  if evaluation:
    metrics["evaluation"] = evaluation
  if lead and status == "completed":
    with open(metrics_path, "w") as f:
      json.dump(metrics, f, indent=2)
  return metrics


def _log_progress(done, num_steps, scalars):
  rate = scalars["steps_per_s"]
  eta = format_eta((num_steps - done) / rate) if rate > 0 else "?"
  logging.info("step %d/%d  loss %.4f (diff %.4f, vae %.2f, dt %.3f)  beta %.3f  "
               "%.2f steps/s, %.1f img/s  ETA %s", done, num_steps, scalars["loss"],
               scalars["loss_diff"], scalars["loss_vae"], scalars["loss_dt"],
               scalars["beta"], rate, scalars["images_per_s"], eta)


def _flatten(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
