"""Checkpoints: an orbax `CheckpointManager` holding a state and the config it
was trained with, under `<workdir>/checkpoints/<step>/` (training) or
`<workdir>/navigation/checkpoints/<step>/` (navigation).

Saves are asynchronous and atomic (orbax writes `<step>.orbax-checkpoint-tmp`
and renames it when complete), so a run killed mid-save leaves the previous
checkpoint as the latest. `restore` checks the stored shapes against the
config's before reading and names every mismatch.

Every read of a checkpoint goes through `Checkpoints._read`: whatever fails
(a truncated, overwritten or deleted file, invalid JSON) is a
`CorruptCheckpointError` naming the step and the file. The programs that
write checkpoints (train, navigate) resume with `restore_latest_intact`,
which moves an unreadable checkpoint aside to `<subdir>.corrupt/` and resumes
from the newest one that reads; the programs that only read a workdir
(evaluate, edit, the API) open it with `read_only=True` (nothing is created
or moved) and stop on the error in one line, or skip the part that needed it.
"""

import datetime
import gc
import os
import re
import shutil
import sys

from absl import logging
import jax
import orbax.checkpoint as ocp

from cldis_jax import config_lib, errors, models as models_lib, parallel, train_step


class CheckpointMismatchError(errors.UserError, ValueError):
  """A checkpoint whose arrays do not fit the model the config describes."""


class CorruptCheckpointError(errors.UserError, OSError):
  """A checkpoint whose files cannot be read."""


def first_line(error: BaseException, limit: int = 240) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  text = f"{type(error).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _orbax_leftover(unraisable) -> bool:
  """Whether an unraisable exception is the debris of a failed orbax read:
  each array coroutine that failed, collected later, and TensorStore
  callbacks that land on the read's closed event loop."""
  code = getattr(unraisable.object, "cr_code", None)
  return ((code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename)
          or (isinstance(unraisable.exc_value, RuntimeError)
              and str(unraisable.exc_value) == "Event loop is closed"))


def _quiet_orbax_leftovers() -> None:
  """From the first failed read on, that debris goes to the debug log rather
  than stderr (dozens of tracebacks, some after the error is reported); the
  error raised says what failed. Any other unraisable exception still prints."""
  previous = sys.unraisablehook
  if getattr(previous, "quiet_orbax", False):
    return

  def hook(unraisable):
    if _orbax_leftover(unraisable):
      logging.debug("after a failed checkpoint read: %r", unraisable.exc_value)
    else:
      previous(unraisable)
  hook.quiet_orbax = True
  sys.unraisablehook = hook


def _culprit(error: BaseException, step_dir: str, item: str) -> str:
  """The file of `step_dir` that `error` (or an error it was raised from)
  names, relative to it; else `item`, the part being read."""
  pattern = re.compile(re.escape(step_dir) + r"/([^\s'\",:;()\[\]]+)")
  while error is not None:
    found = pattern.search(str(error))
    if found:
      return found.group(1).rstrip("/")
    error = error.__cause__ or error.__context__
  return item


def _key_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)


class Checkpoints:
  """Keep-last-K checkpoints of {state, config} in `<workdir>/<subdir>`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               subdir: str = "checkpoints", read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    self.read_only = read_only
    self.manager = None
    if read_only and not os.path.isdir(self.directory):
      return  # nothing to read, and nothing may be created
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=dict(
        state=ocp.StandardCheckpointHandler(), config=ocp.JsonCheckpointHandler()))

  def latest_step(self):
    return None if self.manager is None else self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return [] if self.manager is None else sorted(self.manager.all_steps())

  def save(self, step: int, state, config) -> None:
    """Starts saving (asynchronously unless async_save=False) {state, config} as `step`."""
    self.manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config.to_dict())))

  def restore(self, abstract_state, step: int | None = None):
    """The state at `step` (default: the latest), shaped and sharded like
    `abstract_state`; CheckpointMismatchError names every differing array,
    CorruptCheckpointError the file that cannot be read."""
    step = self._step(step)
    stored = self._read(step, "state", lambda: self.manager.item_metadata(step)["state"])
    self._check_shapes(stored, abstract_state, step)
    return self._read(step, "state", lambda: self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))["state"])

  def restore_config(self, step: int | None = None):
    """The stored config over `base_config()`'s defaults, so that sections
    added since the checkpoint was written (e.g. `edit`) have their defaults."""
    step = self._step(step)
    stored = self._read(step, "config", lambda: self.manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
    config = config_lib.base_config()
    try:
      config.update(config_lib.from_dict(stored))
    except Exception as e:  # pylint: disable=broad-except  (valid JSON, not a config)
      raise self._corrupt(step, "config", e) from e
    return config

  def newest_readable_config(self):
    """(step, stored config) of the newest checkpoint whose config reads,
    or (None, None): what a resume compares its config with, read only
    (damaged checkpoints are set aside later, when the state is restored)."""
    for step in reversed(self.all_steps()):
      try:
        return step, self.restore_config(step)
      except CorruptCheckpointError:
        continue
    return None, None

  def _step(self, step: int | None) -> int:
    step = self.latest_step() if step is None else step
    if step is None or self.manager is None:
      raise errors.NoCheckpointError(f"no checkpoint in {self.directory}")
    return step

  def _read(self, step: int, item: str, read):
    """`read()`, the one place the project reads a checkpoint's files: any
    failure (orbax's errors, invalid JSON or UTF-8, a truncated or missing
    file, a tree that is not the one saved) becomes CorruptCheckpointError
    naming the step and the file."""
    try:
      return read()
    except MemoryError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      _quiet_orbax_leftovers()
      gc.collect()  # the failed coroutines, quietly, now
      raise self._corrupt(step, item, e) from e

  def _corrupt(self, step: int, item: str, error: Exception) -> CorruptCheckpointError:
    step_dir = os.path.join(self.directory, str(step))
    reason = first_line(error).split(" See full TensorStore details")[0]
    return CorruptCheckpointError(f"checkpoint {step_dir} cannot be read "
                                  f"({_culprit(error, step_dir, item)}: {reason})")

  def restore_latest_intact(self, abstract_state):
    """(step, state) of the newest checkpoint whose state and config both
    read, for the programs that write checkpoints (train, navigate): each
    newer one that cannot be read is moved aside to `<directory>.corrupt/`
    (never deleted). (None, None) if there is none. If none of them reads,
    nothing is moved and the latest one's error is raised (a problem that
    every checkpoint shares is not corruption)."""
    steps = self.all_steps()
    unreadable = []
    for step in reversed(steps):
      try:
        state = self.restore(abstract_state, step)
        self.restore_config(step)  # readers need it: a checkpoint without it is damaged
      except CorruptCheckpointError as e:
        unreadable.append(e)
        continue
      for bad_step, error in zip(reversed(steps), unreadable):
        logging.warning("%s; moved to %s, resuming from checkpoint %d", error,
                        self._move_aside(bad_step), step)
      return step, state
    if unreadable:
      raise CorruptCheckpointError(f"{unreadable[0]}; none of the {len(steps)} checkpoints "
                                   "could be read, so none was moved") from unreadable[0]
    return None, None

  def _move_aside(self, step: int) -> str:
    target = os.path.join(self.directory + ".corrupt", str(step))
    if os.path.exists(target):
      stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
      target = f"{target}-{stamp}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    try:
      shutil.move(os.path.join(self.directory, str(step)), target)
    except FileNotFoundError:  # another process of a pod moved it first
      pass
    self.manager.reload()
    return target

  def _check_shapes(self, stored, abstract_state, step):
    want = {_key_name(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    have = {_key_name(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(stored)[0] if hasattr(x, "shape")}
    if not have:  # orbax reads a missing state/_METADATA as an empty tree
      raise self._corrupt(step, "state/_METADATA", ValueError("no arrays in the metadata"))
    problems = [f"{k}: checkpoint {have.get(k, 'missing')}, config {want.get(k, 'missing')}"
                for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
    if problems:
      shown = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more"
                                           if len(problems) > 10 else "")
      raise CheckpointMismatchError(
          f"checkpoint {self.directory}/{step} does not fit this config "
          f"({len(problems)} arrays differ): {shown}. Use the config it was trained "
          "with (stored next to it), or a fresh --workdir.")

  def wait(self):
    if self.manager is not None:
      self.manager.wait_until_finished()

  def close(self):
    if self.manager is not None:
      self.manager.close()


def newest_stored_config(workdir: str, subdir: str = "checkpoints"):
  """(step, config) of the newest checkpoint under `<workdir>/<subdir>` whose
  stored config reads, or (None, None); reads only."""
  ckpt = Checkpoints(workdir, async_save=False, read_only=True, subdir=subdir)
  try:
    return ckpt.newest_readable_config()
  finally:
    ckpt.close()


def latest_trained_step(workdir: str) -> int:
  """The latest training checkpoint's step; NoCheckpointError (read-only) if none."""
  ckpt = Checkpoints(workdir, async_save=False, read_only=True)
  try:
    step = ckpt.latest_step()
  finally:
    ckpt.close()
  if step is None:
    raise errors.NoCheckpointError(
        f"no checkpoint in {ckpt.directory}: train first "
        f"(python -m cldis_jax.main --config ... --workdir {workdir})")
  return step


def restore_ema(config, workdir: str, step: int | None = None):
  """(step, models, EMA parameters on the host) of a trained workdir's latest
  (or given) training checkpoint, for the programs that use a trained model:
  evaluation, navigation, editing and `cldis_jax.api`."""
  step = latest_trained_step(workdir) if step is None else step
  ckpt = Checkpoints(workdir, async_save=False, read_only=True)
  try:
    models = models_lib.build_models(config.model)
    state = ckpt.restore(train_step.abstract_state(config, models, parallel.data_mesh()), step)
  finally:
    ckpt.close()
  return step, models, jax.device_get(state.ema_params)


def stored_config(workdir: str):
  """The config stored with the latest training checkpoint of `workdir`."""
  step = latest_trained_step(workdir)
  ckpt = Checkpoints(workdir, async_save=False, read_only=True)
  try:
    return ckpt.restore_config(step)
  finally:
    ckpt.close()
