"""Stopping cleanly: SIGTERM (preemption) or Ctrl-C on one process, JAX's
preemption sync point on several. The training and navigation loops ask
`reached(step)` after each step and, when it says so, save a checkpoint and
return. A second Ctrl-C aborts at once (KeyboardInterrupt)."""

import signal

from absl import logging
import jax
from jax.experimental import multihost_utils


class StopSignal:
  """Whether to save and stop: SIGTERM or the first Ctrl-C on one process,
  JAX's preemption sync point on several."""

  def __init__(self):
    self.requested = False
    self._previous = {}
    self._multi = jax.process_count() > 1
    if self._multi:
      return
    for signum in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (e.g. some notebook runners)
        logging.warning("%s handler not installed (not in the main thread)",
                        signal.Signals(signum).name)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt("second Ctrl-C: stopped without saving")
    name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    logging.warning("%s: saving a checkpoint and stopping%s", name,
                    " (Ctrl-C again to stop without saving)" if signum == signal.SIGINT else "")
    self.requested = True

  def reached(self, step: int) -> bool:
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def close(self):
    for signum, previous in self._previous.items():
      if previous is not None:
        signal.signal(signum, previous)
    self._previous = {}
