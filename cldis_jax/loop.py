"""What the training loops (autoencoder, latent DDIM, navigation) share: when
a periodic action is due, the window of aux values between two reports, the
step-behind finiteness check, the ETA, and the teardown of what a loop holds
(its checkpoints, its writer and the stop signal)."""

import contextlib
import time

import jax
import numpy as np

from cldis_jax import preemption


def due(step: int, every: int, last: int | None = None) -> bool:
  """Whether an action repeated every `every` steps (0: never) runs after
  `step` steps; with `last`, also after the last step."""
  return bool(every) and (step % every == 0 or step == last)


@contextlib.contextmanager
def holding(ckpt, writer):
  """Yields a `preemption.StopSignal`; on the way out, however the loop ends,
  releases the signal handlers, closes `ckpt` and flushes and closes `writer`."""
  stop = preemption.StopSignal()
  try:
    yield stop
  finally:
    stop.close()
    ckpt.close()
    writer.flush()
    writer.close()


def mean_aux(values) -> dict[str, float]:
  """The mean of each aux term (but "finite") over host values of a window."""
  return {k: float(np.mean([v[k] for v in values])) for k in values[0] if k != "finite"}


class Window:
  """The aux values of the steps since the last report, and their pace."""

  def __init__(self, step: int):
    self.aux = []
    self.restart(step)

  def restart(self, step: int) -> None:
    """Times steps from `step` on from now (after a compilation or an
    evaluation the rate should not include)."""
    self.step, self.time = step, time.perf_counter()

  def report(self, step: int) -> tuple[list, float]:
    """(host aux values, steps/s) of the window up to `step`; starts the next."""
    values, now = jax.device_get(self.aux), time.perf_counter()
    rate = (step - self.step) / (now - self.time) if step > self.step else float("nan")
    self.aux, self.step, self.time = [], step, now
    return values, rate


def check_finite(step: int, aux, last_saved) -> None:
  """FloatingPointError naming the non-finite terms if step `step`'s aux says
  so (waits for that step). Loops check each step one step behind, so that
  dispatch runs one step ahead and no more."""
  if bool(aux["finite"]):
    return
  values = jax.device_get(aux)
  bad = [f"{k}={float(v)}" for k, v in values.items()
         if k != "finite" and not np.isfinite(v)]
  raise FloatingPointError(
      f"non-finite values at step {step}: {', '.join(bad)}. Stopped before saving "
      f"anything from this step; the last checkpoint (step {last_saved}) is intact.")


class FiniteGuard:
  """Each step's finiteness, checked one step behind so that dispatch runs one
  step ahead and no further, and at once before anything is logged or saved:
  `stepped` after dispatching a step, `check` before a log, `save` for a
  checkpoint. FloatingPointError (check_finite) on a bad step."""

  def __init__(self, last_saved):
    self.pending, self.last_saved = None, last_saved

  def stepped(self, step: int, aux) -> None:
    """Step `step` (0-based) was dispatched with `aux`: checks the one before."""
    self.check()
    self.pending = (step, aux)

  def check(self) -> None:
    if self.pending is not None:
      check_finite(*self.pending, self.last_saved)

  def save(self, ckpt, step: int, state, config) -> None:
    """Checks the pending step, then saves `state` as checkpoint `step`."""
    self.check()
    ckpt.save(step, state, config)
    self.last_saved = step


def format_eta(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
