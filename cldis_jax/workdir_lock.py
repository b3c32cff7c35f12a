"""One writer per workdir: training and navigation hold `<workdir>/writer.lock`
while they run, so a second run on the same workdir stops at once instead of
resuming from, and overwriting, the first one's checkpoints.

The lock file names its holder (pid, host, start time, program). It is created
atomically (O_EXCL). A lock left by a process that is no longer alive on this
host (killed with SIGKILL, a crashed machine's leftover on a shared disk seen
from the same host) is taken over with a warning; one held by a live process,
or by another host, stops the second run with a message naming the holder.
On a pod only process 0 takes the lock (the other processes write nothing to
the workdir itself).
"""

import datetime
import json
import os
import socket

from absl import logging

from cldis_jax import errors

NAME = "writer.lock"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  try:  # a zombie (killed, not yet reaped) is dead for our purpose
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True


def _read(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # unreadable or half-written: treated as held by an unknown process


def _describe(holder: dict) -> str:
  if not holder:
    return "an unknown process (the lock file cannot be read)"
  return (f"pid {holder.get('pid')} on host {holder.get('host')} "
          f"({holder.get('program')}, since {holder.get('start')})")


class WorkdirLock:
  """`with WorkdirLock(workdir, "train"):` holds `<workdir>/writer.lock`."""

  def __init__(self, workdir: str, program: str, *, enabled: bool = True):
    self.path = os.path.join(os.path.abspath(workdir), NAME)
    self.program, self.enabled, self.held = program, enabled, False
    self.record = dict(pid=os.getpid(), host=socket.gethostname(), program=program,
                       start=datetime.datetime.now(datetime.timezone.utc)
                       .strftime("%Y-%m-%d %H:%M:%S UTC"))

  def acquire(self) -> None:
    if not self.enabled:
      return
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = _read(self.path)
        if holder is None:
          continue  # released between our two calls
        if not self._stale(holder):
          raise errors.WorkdirError(
              f"workdir {os.path.dirname(self.path)} is in use by {_describe(holder)}: "
              f"wait for it to finish or use another --workdir (if that run is gone, "
              f"delete {self.path})")
        logging.warning("taking over %s from %s, which is no longer running",
                        self.path, _describe(holder))
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(self.record, f)
      self.held = True
      return
    raise errors.WorkdirError(f"could not take {self.path}: other processes keep "
                              "taking it; is another run starting on this workdir?")

  def _stale(self, holder: dict) -> bool:
    return (bool(holder) and holder.get("host") == self.record["host"]
            and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]))

  def release(self) -> None:
    if self.held and _read(self.path) == self.record:
      os.remove(self.path)
    self.held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
