"""The loops' shared plumbing: when a periodic action is due, the teardown, and
stopping and writing safely outside a loop."""

import signal

import pytest

from cldis_jax import checkpoint, errors, loop, writer as writer_lib


def test_due_every_n_steps_and_at_the_last_one():
  assert [s for s in range(1, 11) if loop.due(s, 4, 10)] == [4, 8, 10]
  assert [s for s in range(1, 11) if loop.due(s, 4)] == [4, 8]
  assert not any(loop.due(s, 0, 10) for s in range(1, 11))  # 0: never, not even the last


def test_holding_restores_the_signal_handlers_when_the_loop_raises(tmp_path):
  before = signal.getsignal(signal.SIGTERM)
  ckpt = checkpoint.Checkpoints(str(tmp_path), async_save=False)
  writer = writer_lib.create_default_writer(str(tmp_path))
  with pytest.raises(FloatingPointError):
    with loop.holding(ckpt, writer) as stop:
      assert signal.getsignal(signal.SIGTERM) != before  # the loop's handler
      assert not stop.reached(1)
      raise FloatingPointError("non-finite")
  assert signal.getsignal(signal.SIGTERM) == before


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = str(tmp_path / "metrics.json")
  writer_lib.write_atomic(path, "old")
  with pytest.raises(KeyboardInterrupt):
    with writer_lib.replacing(path) as tmp, open(tmp, "w") as f:
      f.write("half of the new")
      raise KeyboardInterrupt  # Ctrl-C, or SIGTERM's errors.Terminated
  assert open(path).read() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
      "metrics.json"]


def test_sigterm_outside_a_loop_is_a_one_line_stop_with_exit_130(capsys):
  previous = signal.getsignal(signal.SIGTERM)
  try:
    errors.stop_on_sigterm()

    def program(argv):
      del argv
      signal.raise_signal(signal.SIGTERM)
      raise AssertionError("not stopped")
    with pytest.raises(SystemExit) as exited:
      errors.reported(program)([])
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert exited.value.code == errors.INTERRUPTED_CODE
  assert capsys.readouterr().err == ("stopped by SIGTERM: nothing half-written; run it again "
                                     "to complete\n")
