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
- at the end: the final grids and `workdir/metrics.json`, then the final
  checkpoint. A run whose latest checkpoint is at `train.num_steps` has
  therefore written everything; one killed before that retrains from its
  previous checkpoint and writes the same outputs.

One training holds the workdir at a time (`workdir_lock`). On resume the
stored config is compared with the given one: keys that change what is trained
stop the run (`config_lib.training_changes`) unless `allow_config_change`. A
latest checkpoint that cannot be read is moved aside and the newest intact one
is resumed.

A non-finite loss or gradient stops the run with a FloatingPointError naming
the step and the terms, before anything is saved from that step on. SIGTERM
(preemption) and the first Ctrl-C save a checkpoint at the current step and
return normally; on several processes JAX's preemption service picks a step
all of them reach.
"""

import json
import os
import time

from absl import logging
from clu import parameter_overview
import jax
import numpy as np

from cldis_jax import (checkpoint, config_lib, data, errors, evaluate, models as models_lib,
                       objective, parallel, preemption, samples, train_step, workdir_lock,
                       writer as writer_lib)


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


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the
  final metrics also written to `workdir/metrics.json`."""
  config_lib.check_config(config)
  objective.check_objective(config.objective)
  mesh = parallel.data_mesh()
  parallel.check_batch_divides(config.train.batch_size, mesh)
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir, "train", enabled=lead):
    return _train_locked(config, workdir, mesh, allow_config_change)


def _train_locked(config, workdir, mesh, allow_config_change) -> dict:
  lead = jax.process_index() == 0
  _check_resume_config(config, workdir, allow_config_change)  # before building anything
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


def _check_resume_config(config, workdir: str, allow: bool) -> None:
  """Stops (unless `allow`) if the latest checkpoint was trained with values
  that change what is trained; reads only, before anything is written."""
  ckpt = checkpoint.Checkpoints(workdir, async_save=False, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is None:
      return
    stored = ckpt.restore_config(step)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("the config of %s/%s cannot be read (%s); not compared",
                    ckpt.directory, step, checkpoint.first_line(e))
    return
  finally:
    ckpt.close()
  changes = config_lib.training_changes(stored, config)
  if not changes:
    return
  listed = "; ".join(changes)
  if allow:
    logging.warning("resuming checkpoint %d with a changed config "
                    "(--allow_config_change): %s", step, listed)
    return
  raise errors.WorkdirError(
      f"{ckpt.directory}/{step} was trained with another config; changed: {listed}. "
      "Resume with the stored config, use a fresh --workdir, or pass "
      "--allow_config_change to continue with the new values")


def _train(config, workdir, models, source, pipeline, mesh, rng_init, rng_train, ckpt,
           writer, stop) -> dict:
  lead = jax.process_index() == 0
  last_saved, state = ckpt.restore_latest_intact(
      train_step.abstract_state(config, models, mesh))
  if last_saved is not None:
    logging.info("resumed from %s/%d", ckpt.directory, last_saved)
  else:
    state = train_step.init_state_on_mesh(config, models, rng_init, mesh)
    writer.write_hparams(config_lib.flatten(config.to_dict()))
  if lead:
    logging.info("parameters:\n%s", parameter_overview.get_parameter_overview(
        jax.device_get(state.params), include_stats=False))

  num_steps, batch = config.train.num_steps, config.train.batch_size
  start = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.json")
  if start >= num_steps:
    finished = _read_metrics(metrics_path, start)
    if finished is not None:
      logging.info("already trained to step %d (train.num_steps = %d)", start, num_steps)
      return finished
    logging.warning("%s holds step %d but no metrics.json of that step (a workdir from an "
                    "older version, or a lowered train.num_steps): writing the final "
                    "outputs without the training terms", ckpt.directory, start)

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
    # A stop at the last step is ignored: the run completes (final outputs, then
    # the checkpoint) in a few seconds, or a kill makes it retrain from the
    # previous checkpoint.
    preempted = stop.reached(done) and done < num_steps
    log_due = done % config.train.log_every == 0 or done == num_steps
    save_due = bool(save_every) and done % save_every == 0 and done < num_steps
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
  completed = status == "completed"
  if completed and config.samples.every and not (
      done > start and done % config.samples.every == 0):
    write_samples(done)
  if completed and eval_every and not (done > start and done % eval_every == 0):
    write_evaluation(done)
  metrics = dict(
      status=status, step=done, num_steps=num_steps, steps_this_run=done - start,
      wall_time_s=time.perf_counter() - t_start, first_step_s=first_step_s,
      train=_mean_aux(window) if window else scalars,
      controller={k: float(v) for k, v in state.controller._asdict().items()},
      checkpoint=os.path.join(ckpt.directory, str(done if completed else last_saved)))
  if evaluation:
    metrics["evaluation"] = evaluation
  if completed:  # outputs first, so that the final checkpoint means "all written"
    if lead:
      writer_lib.write_atomic(metrics_path, json.dumps(metrics, indent=2))
    if last_saved != done:
      ckpt.save(done, state, config)
  ckpt.wait()
  return metrics


def _read_metrics(path: str, step: int):
  """metrics.json if it records `step`, else None."""
  try:
    with open(path) as f:
      metrics = json.load(f)
  except (OSError, ValueError):
    return None
  return metrics if metrics.get("step") == step else None


def _log_progress(done, num_steps, scalars):
  rate = scalars["steps_per_s"]
  eta = format_eta((num_steps - done) / rate) if rate > 0 else "?"
  logging.info("step %d/%d  loss %.4f (diff %.4f, vae %.2f, dt %.3f)  beta %.3f  "
               "%.2f steps/s, %.1f img/s  ETA %s", done, num_steps, scalars["loss"],
               scalars["loss_diff"], scalars["loss_vae"], scalars["loss_dt"],
               scalars["beta"], rate, scalars["images_per_s"], eta)
