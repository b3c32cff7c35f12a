"""The training program: an end-to-end run of configs/test.py and what it writes,
SIGTERM, non-finite losses, and bad configs (a SIGKILL mid-run and at the end:
workdir_safety_test)."""

import glob
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from cldis_jax import checkpoint, config_lib, errors, train, train_step
from conftest import config_path, subprocess_env


def _config(**train_overrides):
  config = config_lib.load_config(config_path("test.py"))
  config.train.update(train_overrides)
  return config


def read_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
  scalars = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for record in RawEventFileLoader(path).Load():
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        if value.HasField("simple_value"):
          scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def read_state(workdir, step=None):
  """The raw stored train state (nested dicts of numpy arrays)."""
  directory = os.path.join(workdir, "checkpoints")
  step = step if step is not None else max(int(s) for s in os.listdir(directory)
                                           if s.isdigit())
  path = os.path.join(directory, str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  stored = checkpointer.metadata(path).item_metadata.tree
  as_numpy = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), stored)  # any topology
  return step, checkpointer.restore(path, as_numpy)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """configs/test.py for 30 steps with grids at the end."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = _config(num_steps=30, log_every=10, checkpoint_every=10, keep_checkpoints=2)
  config.optim.learning_rate = 1e-3
  config.samples.update(every=30, traversal_steps=5)
  metrics = train.train_and_evaluate(config, workdir)
  return dict(workdir=workdir, config=config, metrics=metrics)


@pytest.mark.slow
def test_test_config_trains_end_to_end_and_writes_its_outputs(run):
  workdir, metrics = run["workdir"], run["metrics"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "30"]  # keep 2
  assert json.load(open(os.path.join(workdir, "metrics.json"))) == json.loads(
      json.dumps(metrics))
  assert metrics["status"] == "completed" and metrics["step"] == 30
  scalars = read_scalars(workdir)
  for tag in ("loss", "loss_diff", "loss_vae", "vae_nll", "vae_kl", "loss_dt", "beta",
              "controller_signal", "controller_error", "grad_norm", "grad_norm_diffae",
              "param_norm", "update_norm", "learning_rate", "steps_per_s"):
    assert [s for s, _ in scalars[tag]] == [10, 20, 30], tag
  pngs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(workdir, "samples", "*")))
  assert pngs == ["recon_00000030.png", "traverse_mu_s_00000030.png",
                  "traverse_vae_00000030.png"]
  # 16 px cells enlarged 4x with 2-px borders: rows x (1 source + 5 values) columns.
  cell = lambda n: (n * (16 + 2) + 2) * 4
  with Image.open(os.path.join(workdir, "samples", "traverse_mu_s_00000030.png")) as im:
    assert im.size == (cell(6), cell(4))  # latent_dim 4 rows
  with Image.open(os.path.join(workdir, "samples", "recon_00000030.png")) as im:
    assert im.size == (cell(8), cell(3))


@pytest.mark.slow
def test_total_loss_falls_and_every_term_is_finite(run):
  scalars = read_scalars(run["workdir"])
  assert all(np.isfinite(v) for values in scalars.values() for _, v in values)
  loss = [v for _, v in scalars["loss"]]
  assert np.all(np.diff(loss) < 0), loss  # window means over steps 1-10, 11-20, 21-30
  assert scalars["loss_diff"][-1][1] < 0.9 * scalars["loss_diff"][0][1]


@pytest.mark.slow
def test_a_finished_workdir_returns_its_metrics_without_training(run):
  again = train.train_and_evaluate(run["config"], run["workdir"])
  assert again == json.loads(json.dumps(run["metrics"]))


@pytest.mark.slow
def test_a_checkpoint_from_another_model_is_refused_naming_the_arrays(run):
  config = run["config"].copy_and_resolve_references()
  config.model.latent_dim = 5
  with pytest.raises(checkpoint.CheckpointMismatchError,
                     match=r"params/head/proj/kernel: checkpoint \(32, 8\), config \(32, 10\)"):
    train.train_and_evaluate(config, run["workdir"], allow_config_change=True)


@pytest.mark.slow
def test_the_stored_config_comes_back(run):
  stored = checkpoint.Checkpoints(run["workdir"]).restore_config()
  assert stored.model == run["config"].model and stored.train == run["config"].train


def test_unknown_config_keys_are_named_with_suggestions(tmp_path):
  config = _config()
  config.train.batchsize = 4
  with pytest.raises(ValueError, match=r"config.train.batchsize \(did you mean batch_size"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_learning_rate_schedules_follow_their_formulas():
  optim = _config().optim
  optim.update(dict(learning_rate=1e-3, warmup_steps=100))
  constant = train_step.learning_rate_schedule(optim, 1000)
  optim.schedule = "cosine"
  cosine = train_step.learning_rate_schedule(optim, 1000)
  for step in (0, 50, 100, 300, 550, 999, 1000, 2000):
    warm = 1e-3 * min(step, 100) / 100
    progress = min(max(step - 100, 0), 900) / 900
    np.testing.assert_allclose(constant(step), warm if step < 100 else 1e-3, rtol=1e-5)
    expected = warm if step < 100 else 1e-3 * 0.5 * (1 + np.cos(np.pi * progress))
    np.testing.assert_allclose(cosine(step), expected, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("schedule, num_steps, message", [
    ("linear", 1000, r"optim.schedule = 'linear'; valid: constant, cosine"),
    ("cosine", 100, r"train.num_steps = 100 above optim.warmup_steps = 100")])
def test_a_bad_schedule_is_named(schedule, num_steps, message):
  optim = _config().optim
  optim.update(dict(schedule=schedule, warmup_steps=100))
  with pytest.raises(errors.ConfigError, match=message):
    train_step.learning_rate_schedule(optim, num_steps)


@pytest.mark.slow
def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path):
  config = _config(num_steps=10, checkpoint_every=1, log_every=100)
  config.samples.every = 0
  config.optim.learning_rate = 1e30  # the first update sends every weight to ~1e30
  with pytest.raises(FloatingPointError, match=r"at step 1: .*loss=(nan|inf)"):
    train.train_and_evaluate(config, str(tmp_path))
  step, state = read_state(str(tmp_path))
  assert step == 1 and int(state["step"]) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def _cli(workdir, *overrides):
  return [sys.executable, "-m", "cldis_jax.main", "--config", config_path("test.py"),
          f"--workdir={workdir}", "--config.samples.every=0", *overrides]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
  proc = subprocess.Popen(_cli(tmp_path, "--config.train.num_steps=1000000",
                               "--config.train.checkpoint_every=0",
                               "--config.train.log_every=5"),
                          env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:  # wait until it is training
    if "step 5/" in line:
      break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  step, state = read_state(str(tmp_path))
  assert 5 <= step < 1_000_000 and int(state["step"]) == step
  assert not (tmp_path / "metrics.json").exists()
