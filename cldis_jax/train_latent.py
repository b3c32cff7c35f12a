"""The latent DDIM's training program (`--mode=train_latent`):
`run(config, workdir)` trains `latent.LatentNet` on the semantic codes of the
latest training checkpoint's EMA autoencoder, which stays frozen.

Under `<workdir>/latent/`: `codes.npz` (the training images' codes, encoded
once and reused on resume while the autoencoder checkpoint is the same),
orbax checkpoints (resumed from, the newest intact one; saved every
`latent.checkpoint_every` steps, at the end and on SIGTERM / Ctrl-C),
TensorBoard scalars and progress lines with ETA every `latent.log_every`
steps, and when it completes `samples_<step>.png` (unconditional samples of
`sample.seed`) and `metrics.json`. It runs on one process, holds the
workdir's lock, and splits each batch over the local devices.
"""

import json
import os
import time
import zipfile

from absl import logging
import jax
import numpy as np

from cldis_jax import (checkpoint, codes as codes_lib, config_lib, errors, grids, latent, loop,
                       parallel, trained, writer as writer_lib)

# latent.* keys that change what is trained (the others say when and how long).
_TRAINED_KEYS = ("latent.net.", "latent.beta_schedule", "latent.num_timesteps", "latent.loss",
                 "latent.num_images", "latent.batch_size", "latent.learning_rate",
                 "latent.weight_decay", "latent.grad_clip_norm", "latent.ema_decay", "seed")


def run(config, workdir: str) -> dict:
  """`--mode=train_latent` on `workdir`; returns the metrics."""
  with trained.writing("train_latent", workdir, config) as model:
    return _train(model, workdir)


def _train(model: trained.Run, workdir: str) -> dict:
  config, lat, t0 = model.config, model.config.latent, time.perf_counter()
  out_dir = os.path.join(workdir, latent.SUBDIR)
  mesh = parallel.data_mesh(jax.local_devices())
  parallel.check_batch_divides(lat.batch_size, mesh, "latent.batch_size")
  net = latent.build(config, model.models.code_dim)
  subdir = os.path.join(latent.SUBDIR, "checkpoints")
  _check_resume(config, workdir, subdir)  # before anything is written
  codes = _codes(model, out_dir)
  ckpt = checkpoint.Checkpoints(workdir, keep=lat.keep_checkpoints, subdir=subdir)
  writer = writer_lib.create_default_writer(out_dir)
  with loop.holding(ckpt, writer) as stop:
    step, state = ckpt.restore_latest_intact(latent.abstract_state(config, net, mesh))
    if step is None:
      mean, std = latent.code_moments(codes)
      state = latent.init_state(config, net, jax.random.key(config.seed), mean, std, model.step)
    else:
      logging.info("resumed the latent DDIM from %s/%d", ckpt.directory, step)
      if int(state.model_step) != model.step:
        logging.warning("the latent DDIM was trained on the codes of autoencoder step %d; the "
                        "latest is %d. Continuing on the latest's codes.",
                        int(state.model_step), model.step)
    state = jax.device_put(state, parallel.replicated(mesh))
    state, status, means = _loop(config, net, state, codes, mesh, ckpt, writer, stop)
    done = int(state.step)
    if ckpt.latest_step() != done:
      ckpt.save(done, state, config)
    ckpt.wait()
    metrics = dict(status=status, step=done, num_steps=lat.num_steps, model_step=model.step,
                   num_codes=len(codes), wall_time_s=time.perf_counter() - t0, train=means,
                   checkpoint=os.path.join(ckpt.directory, str(done)))
    if status == "completed":
      state = jax.device_get(state)
      sampled = latent.generate(config, model.models, model.params, net, state,
                                min(config.sample.num_images, 64), config.sample.seed)
      grid = grids.tile(grids.square(grids.to_uint8(sampled["images"])))
      metrics["samples"] = grids.save_png(os.path.join(out_dir, f"samples_{done:08d}.png"),
                                          grid, grids.scale_for(config.model.image_size))
      writer.write_images(done, {"latent/samples": grid})
      writer_lib.write_atomic(os.path.join(out_dir, "metrics.json"),
                              json.dumps(metrics, indent=2))
  return metrics


def _check_resume(config, workdir: str, subdir: str) -> None:
  """WorkdirError if the newest latent checkpoint whose config reads was
  trained with other latent settings (its net's shapes are checked on
  restore); reads only."""
  step, stored = checkpoint.newest_stored_config(workdir, subdir)
  if stored is None:
    return
  stored, current = config_lib.flatten(stored.to_dict()), config_lib.flatten(config.to_dict())
  changed = [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in sorted(current)
             if k.startswith(_TRAINED_KEYS) and stored.get(k) != current.get(k)]
  if changed:
    raise errors.WorkdirError(
        f"{os.path.join(workdir, subdir, str(step))} was trained with other latent settings; "
        f"changed: {'; '.join(changed)}. Resume with them, or move "
        f"{os.path.join(workdir, subdir)} away to start over")


def _codes(model: trained.Run, out_dir: str) -> np.ndarray:
  """The training images' codes: `codes.npz` if it holds this autoencoder
  step's codes of the same images, else encoded now and written there."""
  config = model.config
  n = config.latent.num_images or len(model.source)
  rows = np.arange(len(model.source))
  if n < len(rows):  # a seeded subset: the dataset's order may follow its factors
    rows = np.sort(np.random.RandomState(config.seed).choice(rows, n, replace=False))
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "codes.npz")
  try:
    with np.load(path) as stored:
      if int(stored["model_step"]) == model.step and np.array_equal(stored["rows"], rows):
        logging.info("latent DDIM: %d codes from %s", len(rows), path)
        return stored["z_sem"]
  except (OSError, KeyError, ValueError, zipfile.BadZipFile):
    pass  # none yet, or unreadable: encode again
  logging.info("latent DDIM: encoding %d training images (autoencoder step %d)", len(rows),
               model.step)
  z = codes_lib.encode_z_sem(model.models, model.params, model.source, rows,
                             batch_size=config.evaluate.encode_batch)
  tmp = path + ".tmp.npz"
  np.savez(tmp, z_sem=z, rows=rows, model_step=model.step)
  os.replace(tmp, path)
  return z


def _loop(config, net, state, codes: np.ndarray, mesh, ckpt, writer, stop):
  """Steps to `latent.num_steps` or a stop signal -> (state, status, the
  last logged means). As in training, each step's finiteness is checked one
  step behind, so dispatch runs one step ahead and no further (with hundreds
  of sharded steps queued, XLA:CPU's collectives once timed out on a 2-core
  machine split into two devices)."""
  lat = config.latent
  step_fn = latent.make_step(config, net)
  rng = jax.random.key(config.seed + 2)
  window, means, guard = loop.Window(int(state.step)), {}, loop.FiniteGuard(ckpt.latest_step())
  for step in range(int(state.step), lat.num_steps):
    rows = latent.batch_rows(config.seed, step, len(codes), lat.batch_size)
    batch = jax.device_put(codes[rows], parallel.batch_sharding(mesh))
    state, aux = step_fn(state, batch, rng)
    guard.stepped(step, aux)
    done = step + 1
    window.aux.append(aux)
    preempted = stop.reached(done) and done < lat.num_steps
    log_due = loop.due(done, lat.log_every, lat.num_steps) or preempted
    save_due = loop.due(done, lat.checkpoint_every) or preempted
    if log_due:
      guard.check()  # never log a bad step (nor save one: guard.save)
      values, rate = window.report(done)
      means = loop.mean_aux(values)
      writer.write_scalars(done, {f"latent/{k}": v for k, v in means.items()}
                           | {"latent/steps_per_s": rate})
      eta = loop.format_eta((lat.num_steps - done) / rate) if rate > 0 else "?"
      logging.info("latent step %d/%d  loss %.4f  grad norm %.3f  %.1f steps/s  ETA %s",
                   done, lat.num_steps, means["loss"], means["grad_norm"], rate, eta)
    if save_due:
      guard.save(ckpt, done, state, config)
    if preempted:
      logging.warning("latent DDIM stopped by preemption at step %d; checkpoint saved", done)
      return state, "preempted", means
  return state, "completed", means
