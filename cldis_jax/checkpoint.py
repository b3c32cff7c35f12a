"""Checkpoints: an orbax `CheckpointManager` holding a state and the config it
was trained with, under `<workdir>/checkpoints/<step>/` (training) or
`<workdir>/navigation/checkpoints/<step>/` (navigation).

Saves are asynchronous and atomic (orbax writes `<step>.orbax-checkpoint-tmp`
and renames it when complete), so a run killed mid-save leaves the previous
checkpoint as the latest. `restore` checks the stored shapes against the
config's before reading and names every mismatch.
"""

import os

import jax
import orbax.checkpoint as ocp

from cldis_jax import config_lib, models as models_lib, parallel, train_step


class CheckpointMismatchError(ValueError):
  """A checkpoint whose arrays do not fit the model the config describes."""


def _key_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)


class Checkpoints:
  """Keep-last-K checkpoints of {state, config} in `<workdir>/<subdir>`."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               subdir: str = "checkpoints"):
    self.directory = os.path.join(os.path.abspath(workdir), subdir)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=dict(
        state=ocp.StandardCheckpointHandler(), config=ocp.JsonCheckpointHandler()))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, config) -> None:
    """Starts saving (asynchronously unless async_save=False) {state, config} as `step`."""
    self.manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config.to_dict())))

  def restore(self, abstract_state, step: int | None = None):
    """The state at `step` (default: the latest), shaped and sharded like
    `abstract_state`; CheckpointMismatchError names every differing array."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    stored = self.manager.item_metadata(step)["state"]
    self._check_shapes(stored, abstract_state, step)
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))["state"]

  def restore_config(self, step: int | None = None):
    """The stored config over `base_config()`'s defaults, so that sections
    added since the checkpoint was written (e.g. `edit`) have their defaults."""
    step = self.latest_step() if step is None else step
    stored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    config = config_lib.base_config()
    config.update(config_lib.from_dict(stored["config"]))
    return config

  def _check_shapes(self, stored, abstract_state, step):
    want = {_key_name(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    have = {_key_name(p): tuple(x.shape) for p, x in
            jax.tree_util.tree_flatten_with_path(stored)[0] if hasattr(x, "shape")}
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
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def restore_ema(config, workdir: str, step: int | None = None):
  """(step, models, EMA parameters on the host) of a trained workdir's latest
  (or given) training checkpoint, for the programs that use a trained model:
  evaluation, navigation, editing and `cldis_jax.api`."""
  ckpt = Checkpoints(workdir, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {ckpt.directory}: train first "
                              f"(python -m cldis_jax.main --config ... --workdir {workdir})")
    models = models_lib.build_models(config.model)
    state = ckpt.restore(train_step.abstract_state(config, models, parallel.data_mesh()), step)
  finally:
    ckpt.close()
  return step, models, jax.device_get(state.ema_params)


def stored_config(workdir: str, subdir: str = "checkpoints"):
  """The config stored with the latest checkpoint under `<workdir>/<subdir>`."""
  ckpt = Checkpoints(workdir, async_save=False, subdir=subdir)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"no checkpoint in {ckpt.directory}")
    return ckpt.restore_config()
  finally:
    ckpt.close()
