"""The loops' shared plumbing: when a periodic action is due, and the teardown."""

import signal

import pytest

from cldis_jax import checkpoint, loop, writer as writer_lib


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
