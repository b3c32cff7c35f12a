"""Stopping cleanly on preemption: SIGTERM on one process, JAX's preemption
sync point on several. The training and navigation loops ask `reached(step)`
after each step and, when it says so, save a checkpoint and return."""

import signal

from absl import logging
import jax
from jax.experimental import multihost_utils


class StopSignal:
  """Whether to save and stop: SIGTERM on one process, JAX's preemption
  sync point on several."""

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multi = jax.process_count() > 1
    if not self._multi:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread (e.g. some notebook runners)
        logging.warning("SIGTERM handler not installed (not in the main thread)")

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint and stopping")
    self.requested = True

  def reached(self, step: int) -> bool:
    if self._multi:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
