"""User errors: problems with what the user gave (a config value, a file, a
workdir), as opposed to bugs.

`main` prints a `UserError` as one line, `error: <message>`, and exits with
`EXIT_CODE`; any other exception keeps its traceback. The project's own error
classes derive from `UserError` and from the builtin a caller would expect
(`ConfigError` is a `ValueError`, a missing dataset a `FileNotFoundError`), so
library callers can catch either.
"""

import signal
import sys

EXIT_CODE = 2
INTERRUPTED_CODE = 130


class UserError(Exception):
  """Something the user gave is wrong; the message says what would be valid."""


class ConfigError(UserError, ValueError):
  """A config value that nothing can run with."""


class DataError(UserError, ValueError):
  """A dataset file whose contents do not match what its loader reads."""


class UsageError(UserError, RuntimeError):
  """A program started in a way it cannot run (e.g. a mode that runs on one
  process, started with several)."""


class WorkdirError(UserError, RuntimeError):
  """A workdir in a state this program cannot use (locked, no checkpoint, a
  config that changed since the checkpoint)."""


class NoCheckpointError(UserError, FileNotFoundError):
  """A program that reads a trained run found no checkpoint."""


def one_line(error) -> str:
  """The message of `error` (an exception or a string) on one line."""
  text = str(error)
  if isinstance(error, KeyError) and len(error.args) == 1:
    text = str(error.args[0])  # KeyError's str() quotes its message
  return " ".join(text.split())


def fail(message: str) -> None:
  """Prints `error: message` on stderr and exits with EXIT_CODE."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(EXIT_CODE)


class Terminated(KeyboardInterrupt):
  """SIGTERM, where no loop saves and stops on it (evaluation, editing)."""


def _raise_terminated(signum, frame):
  del signum, frame
  raise Terminated()


def stop_on_sigterm() -> None:
  """SIGTERM raises `Terminated` (like Ctrl-C's KeyboardInterrupt), so that a
  program stops between two steps and `reported` says so in one line; the
  training and navigation loops install their own handler while they run.
  One process only: `jax.distributed` has its own preemption handling."""
  signal.signal(signal.SIGTERM, _raise_terminated)


def reported(program):
  """`program(argv)` with user errors as one line (exit 2), and Ctrl-C or
  SIGTERM (`stop_on_sigterm`) where nothing saves on them as a one-line
  notice (exit 130): for `app.run` (the entry points of `main` and `convert`)."""
  def run(argv):
    try:
      return program(argv)
    except UserError as e:
      fail(one_line(e))
    except KeyboardInterrupt as e:
      name = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
      print(f"stopped by {name}: nothing half-written; run it again to complete",
            file=sys.stderr)
      sys.exit(INTERRUPTED_CODE)
  return run
