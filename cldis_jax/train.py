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

from cldis_jax import (checkpoint, checks, config_lib, copilots, data, errors, eval_report,
                       evaluate, loop, models as models_lib, parallel, samples, supervision,
                       train_step, workdir_lock, writer as writer_lib)


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the
  final metrics also written to `workdir/metrics.json`."""
  checks.check(config)
  mesh = parallel.data_mesh()
  parallel.check_batch_divides(config.train.batch_size, mesh)
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir, "train", enabled=lead):
    _check_resume_config(config, workdir, allow_config_change)  # before building anything
    models = models_lib.build_models(config.model)
    source = data.source_of(config)
    batches = _batches(config, source, mesh)
    # Made by a jitted call so that the keys are replicated over every process.
    rng_init, rng_train = jax.jit(lambda: jax.random.split(jax.random.key(config.seed)),
                                  out_shardings=parallel.replicated(mesh))()
    ckpt = checkpoint.Checkpoints(workdir, keep=config.train.keep_checkpoints,
                                  async_save=config.train.async_checkpoints)
    writer = writer_lib.create_default_writer(workdir, just_logging=not lead)
    with loop.holding(ckpt, writer) as stop:
      last_saved, state = _restore_or_init(config, models, mesh, rng_init, ckpt, writer)
      start, metrics_path = int(state.step), os.path.join(workdir, "metrics.json")
      if start >= config.train.num_steps:
        finished = _read_metrics(metrics_path, start)
        if finished is not None:
          logging.info("already trained to step %d (train.num_steps = %d)", start,
                       config.train.num_steps)
          return finished
        logging.warning("%s holds step %d but no metrics.json of that step (a workdir from an "
                        "older version, or a lowered train.num_steps): writing the final "
                        "outputs without the training terms", ckpt.directory, start)
      outputs = _Outputs(config, workdir, models, source, mesh, writer)
      step_fn = train_step.make_train_step(config, models, mesh)
      state, run = _loop(config, state, batches(start), step_fn, rng_train, ckpt, writer, stop, outputs, last_saved)
      done, completed = int(state.step), run["status"] == "completed"
      if completed and done == start:  # no step this run: the last step's outputs are due
        outputs.write(done, state, config.samples.every, config.evaluate.every)
      metrics = _final_metrics(config, state, run, start, ckpt, outputs.evaluation)
      if completed:  # outputs first, so that the final checkpoint means "all written"
        if lead:
          writer_lib.write_atomic(metrics_path, json.dumps(metrics, indent=2))
        if run["last_saved"] != done:
          ckpt.save(done, state, config)
      ckpt.wait()
      return metrics


def _batches(config, source, mesh):
  """start step -> an iterator of the train step's inputs from there to
  train.num_steps (with labelled factors: the batch of all images and the
  labelled batch of each step)."""
  end = config.train.num_steps
  if not supervision.enabled(config):
    pipeline = data.build_pipeline(config, source, mesh)
    return lambda start: (supervision.step_inputs(b, None)
                          for b in pipeline.iterate(start, end))
  table = supervision.label_table(config, source)
  everything, few = supervision.build_pipelines(config, source, table, mesh)
  logging.info("labelled factors %s: %d of %d images carry labels",
               ", ".join(supervision.factors_of(config)),
               int((table >= 0).any(axis=1).sum()), len(source))
  return lambda start: map(supervision.step_inputs, everything.iterate(start, end),
                           few.iterate(start, end))


def _restore_or_init(config, models, mesh, rng_init, ckpt, writer):
  """(the step of the checkpoint resumed or None, the train state)."""
  last_saved, state = ckpt.restore_latest_intact(
      train_step.abstract_state(config, models, mesh))
  if last_saved is not None:
    logging.info("resumed from %s/%d", ckpt.directory, last_saved)
  else:
    state = train_step.init_state_on_mesh(config, models, rng_init, mesh)
    writer.write_hparams(config_lib.flatten(config.to_dict()))
  if jax.process_index() == 0:
    logging.info("parameters:\n%s", parameter_overview.get_parameter_overview(
        jax.device_get(state.params), include_stats=False))
  return last_saved, state


class _Outputs:
  """The picture grids and evaluations written from the EMA parameters."""

  def __init__(self, config, workdir, models, source, mesh, writer):
    self.config, self.workdir, self.models, self.source = config, workdir, models, source
    self.writer, self.lead = writer, jax.process_index() == 0
    self.previews = parallel.replicate(data.spread_images(source, config.samples.num_images),
                                       mesh)
    self.evaluation = {}  # the latest evaluation's headline numbers

  def write(self, step: int, state, samples_due: bool, evaluation_due: bool) -> None:
    if samples_due:
      grid = samples.sample_grids(self.models, self.config, state.ema_params, self.previews)
      if self.lead:
        samples.save_grids(self.workdir, step, grid, self.config.model.image_size)
      self.writer.write_images(step, grid)
    if evaluation_due and jax.process_count() > 1:  # the evaluators read on one host
      logging.warning("evaluate.every is ignored with %d processes; run --mode=evaluate "
                      "on the checkpoint instead", jax.process_count())
    elif evaluation_due:
      summary = evaluate.evaluate_params(
          self.config, self.models, jax.device_get(state.ema_params), self.source,
          os.path.join(self.workdir, "eval", str(step)), step, self.writer)
      self.evaluation.update(step=step, **eval_report.headline(summary))


def _loop(config, state, batches, step_fn, rng_train, ckpt, writer, stop, outputs,
          last_saved):
  """Steps to `train.num_steps` or a stop signal -> (state, {"status",
  "last_saved", "first_step_s", "wall_time_s", "train": the last window's means}).
  Each step's finiteness is checked one step behind, so that dispatch runs
  ahead, and always before anything is logged or saved."""
  t, num_steps = config.train, config.train.num_steps
  window, guard, scalars, first_step_s = loop.Window(int(state.step)), loop.FiniteGuard(
      last_saved), {}, None
  status, t_start = "completed", time.perf_counter()
  for step, batch in zip(range(int(state.step), num_steps), batches):
    state, aux = step_fn(state, batch, rng_train)
    if first_step_s is None:
      jax.block_until_ready(aux)
      first_step_s = time.perf_counter() - t_start
      logging.info("first step (with compilation) took %.1f s", first_step_s)
      window.restart(step + 1)
    guard.stepped(step, aux)
    done = step + 1
    window.aux.append(aux)
    # A stop at the last step is ignored: the run completes (final outputs, then
    # the checkpoint) in a few seconds, or a kill makes it retrain from the
    # previous checkpoint.
    preempted = stop.reached(done) and done < num_steps
    log_due = loop.due(done, t.log_every, num_steps)
    save_due = loop.due(done, t.checkpoint_every) and done < num_steps
    samples_due = loop.due(done, config.samples.every, num_steps)
    evaluation_due = loop.due(done, config.evaluate.every, num_steps)
    if log_due or samples_due or evaluation_due:
      guard.check()  # never log or evaluate a bad step (nor save one: guard.save)
    if log_due:
      scalars = _log(writer, window, done, num_steps, t.batch_size)
    if save_due or preempted:
      guard.save(ckpt, done, state, config)
    outputs.write(done, state, samples_due, evaluation_due)
    if preempted:
      status = "preempted"
      logging.warning("stopped by preemption at step %d; checkpoint saved", done)
      break
  guard.check()
  train = loop.mean_aux(jax.device_get(window.aux)) if window.aux else scalars
  return state, dict(status=status, last_saved=guard.last_saved, first_step_s=first_step_s,
                     wall_time_s=time.perf_counter() - t_start, train=train)


def _log(writer, window, done: int, num_steps: int, batch_size: int) -> dict:
  values, rate = window.report(done)
  scalars = dict(loop.mean_aux(values), steps_per_s=rate, images_per_s=rate * batch_size)
  writer.write_scalars(done, scalars)
  if jax.process_index() == 0:
    eta = loop.format_eta((num_steps - done) / rate) if rate > 0 else "?"
    labelled = (f", classify {scalars['classify']:.3f}" if "classify" in scalars else "")
    logging.info("step %d/%d  loss %.4f (diff %.4f, vae %.2f, dt %.3f%s)  beta %.3f  "
                 "%.2f steps/s, %.1f img/s  ETA %s", done, num_steps, scalars["loss"],
                 scalars["loss_diff"], scalars["loss_vae"], scalars["loss_dt"], labelled,
                 scalars["beta"], rate, scalars["images_per_s"], eta)
  return scalars


def _final_metrics(config, state, run: dict, start: int, ckpt, evaluation: dict) -> dict:
  done, completed = int(state.step), run["status"] == "completed"
  metrics = dict(
      status=run["status"], step=done, num_steps=config.train.num_steps,
      steps_this_run=done - start, wall_time_s=run["wall_time_s"],
      first_step_s=run["first_step_s"], train=run["train"],
      controller={k: float(v) for k, v in state.controller._asdict().items()},
      checkpoint=os.path.join(ckpt.directory, str(done if completed else run["last_saved"])))
  if evaluation:
    metrics["evaluation"] = evaluation
  return metrics


def _check_resume_config(config, workdir: str, allow: bool) -> None:
  """Stops (unless `allow`) if the newest checkpoint whose config reads was
  trained with values that change what is trained; reads only, before
  anything is written (a damaged checkpoint is reported and set aside when
  the state is restored)."""
  step, stored = checkpoint.newest_stored_config(workdir)
  if stored is None:
    return
  changes = config_lib.training_changes(copilots.with_controller(stored),
                                        copilots.with_controller(config))
  if not changes:
    return
  listed = "; ".join(changes)
  if allow:
    logging.warning("resuming checkpoint %d with a changed config "
                    "(--allow_config_change): %s", step, listed)
    return
  where = os.path.join(os.path.abspath(workdir), "checkpoints", str(step))
  raise errors.WorkdirError(
      f"{where} was trained with another config; changed: {listed}. "
      "Resume with the stored config, use a fresh --workdir, or pass "
      "--allow_config_change to continue with the new values")


def _read_metrics(path: str, step: int):
  """metrics.json if it records `step`, else None."""
  try:
    with open(path) as f:
      metrics = json.load(f)
  except (OSError, ValueError):
    return None
  return metrics if metrics.get("step") == step else None
