"""A trained run: what evaluation, navigation, editing and `cldis_jax.api`
start from.

`load(workdir)` reads the latest (or a given) training checkpoint's EMA
weights with the config stored next to them (or the one given), checked; the
dataset is opened on first use, and `process(steps)` is the DDIM process of
that many steps.
"""

import contextlib
import dataclasses
import functools

import jax
import ml_collections

from cldis_jax import (checkpoint, checks, data, diffusion, errors, models as models_lib,
                       workdir_lock)


@dataclasses.dataclass(eq=False)
class Run:
  """A trained model's config, networks, EMA parameters (on the host) and step."""
  config: ml_collections.ConfigDict
  models: models_lib.Models
  params: dict
  step: int
  workdir: str | None = None

  def __post_init__(self):
    """Subclasses (`api.Trained`) set up what they derive here."""

  @functools.cached_property
  def source(self) -> data.Source:
    """The config's dataset, opened on first use."""
    return data.source_of(self.config)

  def process(self, steps: int, guidance: float = 1.0) -> diffusion.Diffusion:
    """The "ddim{steps}" process of the config's diffusion, its decoders
    guided at `guidance`."""
    return diffusion.process(self.config.diffusion, steps, guidance=guidance)


def one_process(mode: str) -> None:
  """Refuses to run `--mode=<mode>` on several processes: these programs read,
  encode and write on one host."""
  if jax.process_count() > 1:
    raise errors.UsageError(f"--mode={mode} runs on one process: start it without "
                            "--distributed, on the trained workdir")


def load(workdir: str, config=None, step: int | None = None, *, cls=Run) -> Run:
  """The run in `workdir` (latest training checkpoint unless `step`), with the
  config stored next to it unless one is given. NoCheckpointError if the
  workdir holds no training checkpoint."""
  config = config or checkpoint.stored_config(workdir)
  checks.check(config)
  step, models, params = checkpoint.restore_ema(config, workdir, step)
  return cls(config, models, params, step, workdir)


@contextlib.contextmanager
def writing(mode: str, workdir: str, config):
  """For `--mode=<mode>`, which writes into a trained workdir: one process,
  the run loaded (a clear error before anything is written), then the
  workdir's writer lock held while the body runs; yields the Run."""
  one_process(mode)
  model = load(workdir, config)
  with workdir_lock.WorkdirLock(workdir, mode):
    yield model
