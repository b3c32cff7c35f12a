"""Faults and bad input: a workdir has one writer, a run killed anywhere
resumes to the uninterrupted result, a corrupt checkpoint is set aside, read-only
programs write nothing, config changes on resume are caught, and user errors
are one line. Each case ends in a clean message or a safe recovery."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from cldis_jax import (api, checkpoint, config_lib, convert, errors, evaluate, navigate,
                       preemption, train, workdir_lock)
from cldis_jax.data import folder
from cldis_jax.models import layers
from conftest import REPO, config_path, subprocess_env
from train_test import read_state


def _config(**train):
  config = config_lib.load_config(config_path("test.py"))
  config.train.update({**dict(num_steps=20, checkpoint_every=10, log_every=10), **train})
  config.samples.every = 0
  return config


def _tree(workdir) -> dict[str, float]:
  """Every file under `workdir` -> its modification time (what a program wrote)."""
  return {os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
          for root, _, names in os.walk(workdir) for name in names}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """configs/test.py for 20 steps (checkpoints 10 and 20), recording whether
  metrics.json existed when each checkpoint was saved."""
  workdir = str(tmp_path_factory.mktemp("finished"))
  saves = []
  original = checkpoint.Checkpoints.save

  def save(self, step, state, config):
    saves.append((step, os.path.exists(os.path.join(workdir, "metrics.json"))))
    return original(self, step, state, config)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(checkpoint.Checkpoints, "save", save)
    metrics = train.train_and_evaluate(_config(), workdir)
  return dict(workdir=workdir, metrics=metrics, saves=saves, state=read_state(workdir)[1])


def _copy(finished, tmp_path) -> str:
  target = str(tmp_path / "run")
  shutil.copytree(finished["workdir"], target)
  return target


def _cli(workdir, *args, mode="train"):
  return [sys.executable, "-m", "cldis_jax.main", "--config", config_path("test.py"),
          f"--workdir={workdir}", f"--mode={mode}", "--config.samples.every=0", *args]


def _error_line(result) -> str:
  """The user-error line of a finished CLI run (asserting it is the only message)."""
  assert result.returncode == errors.EXIT_CODE, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def _run_cli(*args, **kwargs):
  return subprocess.run(_cli(*args, **kwargs), env=subprocess_env(), cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


# --- 1. one writer per workdir ------------------------------------------------------------


def test_a_second_lock_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path), "train"):
    with pytest.raises(errors.WorkdirError,
                       match=rf"in use by pid {os.getpid()} on host {socket.gethostname()} "
                             r"\(train, since .* UTC\)"):
      workdir_lock.WorkdirLock(str(tmp_path), "navigate").acquire()
  assert not (tmp_path / workdir_lock.NAME).exists()  # released


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / workdir_lock.NAME).write_text(json.dumps(
      dict(pid=dead.pid, host=socket.gethostname(), program="train", start="then")))
  with workdir_lock.WorkdirLock(str(tmp_path), "train") as lock:
    assert json.loads((tmp_path / workdir_lock.NAME).read_text()) == lock.record
  assert f"from pid {dead.pid}" in caplog.text and "no longer running" in caplog.text


@pytest.mark.parametrize("content", [
    json.dumps(dict(pid=1, host="another-host", program="train", start="then")),
    "{half a json",
])
def test_a_lock_of_another_host_or_unreadable_is_refused(tmp_path, content):
  (tmp_path / workdir_lock.NAME).write_text(content)
  with pytest.raises(errors.WorkdirError, match="in use by .*delete .*writer.lock"):
    workdir_lock.WorkdirLock(str(tmp_path), "train").acquire()
  assert (tmp_path / workdir_lock.NAME).read_text() == content


@pytest.mark.slow
def test_training_releases_the_lock_and_navigation_refuses_a_held_one(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  assert not os.path.exists(os.path.join(workdir, workdir_lock.NAME))
  before = _tree(workdir)
  with workdir_lock.WorkdirLock(workdir, "train"):
    with pytest.raises(errors.WorkdirError, match="in use by"):
      navigate.run(_config(), workdir)
  assert _tree(workdir) == before  # no navigation/ written


@pytest.mark.slow
def test_a_second_training_on_a_workdir_stops_at_once_and_the_first_completes(tmp_path):
  first = subprocess.Popen(_cli(tmp_path, "--config.train.num_steps=20",
                                "--config.train.log_every=5"),
                           env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  for line in first.stderr:  # wait until it is training
    if "step 5/" in line:
      break
  first.send_signal(signal.SIGSTOP)  # still training, however fast the machine
  try:
    start = time.time()
    second = _run_cli(tmp_path, "--config.train.num_steps=20",
                      "--config.optim.learning_rate=1e-3")
    assert time.time() - start < 60
  finally:
    first.send_signal(signal.SIGCONT)
  assert f"is in use by pid {first.pid}" in _error_line(second)
  _, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["status"] == "completed" and metrics["step"] == 20
  stored = checkpoint.stored_config(str(tmp_path))
  assert stored.optim.learning_rate == 1e-4  # the first run's, untouched


# --- 2. a run is finished only when everything is written ----------------------------------


@pytest.mark.slow
def test_the_final_outputs_are_written_before_the_final_checkpoint(finished):
  assert finished["saves"] == [(10, False), (20, True)]


def _training_terms(metrics):
  keep = {k: v for k, v in metrics["train"].items() if k not in ("steps_per_s", "images_per_s")}
  return metrics["status"], metrics["step"], keep, metrics["controller"]


def _kill_when(proc, path, poll=0.002):
  """SIGKILL `proc` as soon as `path` exists."""
  deadline = time.time() + 240
  while not path.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(poll)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.mark.slow
def test_a_run_killed_mid_run_and_at_its_end_resumes_to_the_uninterrupted_outputs(
    finished, tmp_path):
  args = ("--config.train.num_steps=20", "--config.train.checkpoint_every=10",
          "--config.train.log_every=10")
  start = lambda: subprocess.Popen(_cli(tmp_path, *args), env=subprocess_env(), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _kill_when(start(), tmp_path / "checkpoints" / "10")  # mid-run, after its first save
  kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert kept and kept[-1] < 20, kept
  metrics_json = tmp_path / "metrics.json"
  # Resumed, then killed in the gap: metrics.json written, checkpoint 20 maybe not.
  _kill_when(start(), metrics_json)
  rerun = _run_cli(tmp_path, *args)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "taking over" in rerun.stderr  # the killed run's lock
  assert _training_terms(json.loads(metrics_json.read_text())) == _training_terms(
      json.loads(json.dumps(finished["metrics"])))
  step, state = read_state(str(tmp_path))
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, state, finished["state"])


@pytest.mark.slow
def test_a_final_checkpoint_without_its_metrics_is_finished_with_a_warning(finished, tmp_path,
                                                                           caplog):
  workdir = _copy(finished, tmp_path)
  os.remove(os.path.join(workdir, "metrics.json"))
  metrics = train.train_and_evaluate(_config(), workdir)
  assert "no metrics.json of that step" in caplog.text
  assert metrics["step"] == 20 and metrics["steps_this_run"] == 0
  assert json.load(open(os.path.join(workdir, "metrics.json")))["step"] == 20


# --- 3. a corrupt checkpoint is set aside ---------------------------------------------------


def _data_files(step_dir):
  """The array data files of a checkpoint, largest first."""
  paths = [os.path.join(root, n) for root, _, names in os.walk(step_dir) for n in names
           if os.path.basename(root) == "d"]
  return sorted(paths, key=os.path.getsize, reverse=True)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
@pytest.mark.slow
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_training_resumes_before_it(
    finished, tmp_path, caplog, damage):
  workdir = _copy(finished, tmp_path)
  latest = os.path.join(workdir, "checkpoints", "20")
  victim = _data_files(latest)[0]
  if damage == "truncate":
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)
  else:
    os.remove(victim)
  metrics = train.train_and_evaluate(_config(), workdir)
  moved = os.path.join(workdir, "checkpoints.corrupt", "20")
  assert os.path.isdir(moved)  # set aside, not deleted
  warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
  assert len(warnings) == 1 and "\n" not in warnings[0] and "moved to" in warnings[0]
  assert metrics["steps_this_run"] == 10
  jax.tree.map(np.testing.assert_array_equal, read_state(workdir)[1], finished["state"])


def test_when_no_checkpoint_restores_it_stops_and_moves_nothing(tmp_path):
  ckpt = checkpoint.Checkpoints(str(tmp_path), async_save=False)
  state = {"w": np.arange(4000, dtype=np.float32)}
  config = config_lib.base_config()
  for step in (1, 2):
    ckpt.save(step, state, config)
  for step in (1, 2):
    for path in _data_files(os.path.join(tmp_path, "checkpoints", str(step))):
      os.remove(path)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=r"checkpoints/2 cannot be read .*none of the 2 checkpoints"):
    ckpt.restore_latest_intact(abstract)
  ckpt.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  assert not (tmp_path / "checkpoints.corrupt").exists()


@pytest.mark.slow
def test_a_read_only_program_names_a_corrupt_checkpoint_and_moves_nothing(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  os.remove(_data_files(os.path.join(workdir, "checkpoints", "20"))[0])
  before = _tree(workdir)
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=r"checkpoints/20 cannot be read \(\w+: ") as raised:
    api.load(workdir)
  assert isinstance(raised.value, errors.UserError) and "\n" not in str(raised.value)
  assert _tree(workdir) == before


# --- 4. read-only programs never write --------------------------------------------------------


def test_loading_or_evaluating_a_missing_workdir_creates_nothing(tmp_path):
  missing = str(tmp_path / "nothing_here")
  with pytest.raises(errors.NoCheckpointError, match="train first"):
    api.load(missing)
  with pytest.raises(errors.NoCheckpointError, match="train first"):
    evaluate.run(_config(), missing)
  with pytest.raises(errors.NoCheckpointError, match="train first"):
    navigate.run(_config(), missing)
  assert not os.path.exists(missing)


@pytest.mark.slow
def test_mu_s_directions_of_a_workdir_without_navigation_write_nothing(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  before = _tree(workdir)
  model = api.load(workdir)
  directions, sigma = model.directions("mu_s")
  assert directions.shape[0] == sigma.shape[0] == 4
  with pytest.raises(errors.NoCheckpointError, match="run --mode=navigate"):
    model.directions("navigation")
  assert _tree(workdir) == before


# --- 5. config changes on resume ---------------------------------------------------------------


def test_training_changes_name_what_is_trained_and_pass_the_schedule():
  old = _config()
  new = old.copy_and_resolve_references()
  new.seed, new.train.batch_size, new.data.name = 1, 8, "procedural/dsprites"
  new.train.update(num_steps=99, log_every=3, checkpoint_every=7)
  new.evaluate.num_train = 5
  new.samples.every = 11
  assert config_lib.training_changes(old, new) == [
      "data.name: 'procedural/shapes3d' -> 'procedural/dsprites'", "seed: 0 -> 1",
      "train.batch_size: 4 -> 8"]


def test_under_a_cosine_learning_rate_the_number_of_steps_is_trained():
  old = _config()
  old.optim.schedule = "cosine"
  new = old.copy_and_resolve_references()
  new.train.update(num_steps=old.train.num_steps * 2, log_every=3)
  assert config_lib.training_changes(old, new) == [
      f"train.num_steps: {old.train.num_steps} -> {new.train.num_steps}"]


def test_a_key_added_since_the_checkpoint_counts_only_when_it_leaves_its_default():
  new = _config()
  old = new.copy_and_resolve_references()
  del old.subspaces  # a checkpoint from before config.subspaces existed
  assert config_lib.training_changes(old, new) == []
  new.subspaces.w_swap = 2.0
  assert config_lib.training_changes(old, new) == ["subspaces.w_swap: (absent) -> 2.0"]


@pytest.mark.slow
def test_resuming_with_another_seed_stops_naming_it_unless_allowed(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  before = _tree(workdir)
  changed = _config()
  changed.seed = 3
  changed.objective.dt_direction = "forward"
  with pytest.raises(errors.WorkdirError,
                     match=r"changed: objective.dt_direction: 'reverse' -> 'forward'; "
                           r"seed: 0 -> 3\. .*--allow_config_change"):
    train.train_and_evaluate(changed, workdir)
  assert _tree(workdir) == before
  assert train.train_and_evaluate(changed, workdir, allow_config_change=True)["step"] == 20


@pytest.mark.slow
def test_a_schedule_change_resumes(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  config = _config(log_every=5, keep_checkpoints=5)
  config.evaluate.num_train = 10
  assert train.train_and_evaluate(config, workdir)["step"] == 20


# --- 6, 7. user errors are one line, found before anything compiles ---------------------------


@pytest.mark.parametrize("args, expected", [
    (("--config.train.num_step=3",),
     "error: --config.train.num_step: config.train has no key 'num_step' (did you mean "
     "config.train.num_steps?)"),
    (("--config.train.num_steps=abc",), "invalid literal for int()"),
    (("--config.train.log_every=0",), "train.log_every = 0 (valid: an integer >= 1)"),
    (("--config.model.latent_dim=0",), "model.latent_dim = 0 (valid: an integer >= 1)"),
    (("--config.train.checkpoint_every=-5",),
     "train.checkpoint_every = -5 (valid: an integer >= 0)"),
    (("--config.data.name=shapes3dd",), "data.name 'shapes3dd' is not a dataset"),
    (("--config.objective.controller.kind=pid",), "'pid' is not a controller"),
])
def test_a_bad_config_is_one_line_before_compiling(tmp_path, args, expected):
  result = _run_cli(tmp_path / "run", *args)
  assert expected in _error_line(result)
  assert "first step" not in result.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_missing_config_file_is_one_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "cldis_jax.main", "--config",
                           "configs/nope.py", f"--workdir={tmp_path}"], env=subprocess_env(),
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert "no such file 'configs/nope.py'" in _error_line(result)


@pytest.mark.parametrize("mode", ["evaluate", "navigate", "edit"])
def test_a_program_on_a_missing_workdir_is_one_line_and_creates_nothing(tmp_path, mode):
  result = _run_cli(tmp_path / "missing", mode=mode)
  assert "no checkpoint in" in _error_line(result)
  assert not os.path.exists(tmp_path / "missing")


def test_check_values_names_every_bad_size_and_cadence():
  config = _config()
  config.train.log_every, config.model.latent_dim, config.navigate.batch_size = 0, 0, -2
  with pytest.raises(errors.ConfigError) as raised:
    config_lib.check_config(config)
  message = str(raised.value)
  for key in ("train.log_every = 0", "model.latent_dim = 0", "navigate.batch_size = -2"):
    assert key in message


def _png(path, shape):
  Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, np.uint8)).save(path)


def test_a_truncated_image_is_found_when_the_folder_opens(tmp_path):
  _png(tmp_path / "a.png", (20, 20, 3))
  data = (tmp_path / "a.png").read_bytes()
  (tmp_path / "b.png").write_bytes(data[:len(data) // 2])
  with pytest.raises(folder.CorruptImageError, match=r"b\.png.*on_bad_image='skip'"):
    folder.ImageFolder(str(tmp_path), resolution=16)
  skipping = folder.ImageFolder(str(tmp_path), resolution=16, on_bad_image="skip")
  assert skipping.skipped == {str(tmp_path / "b.png")}


def test_upscaling_alpha_and_grayscale_are_counted_and_logged_once(tmp_path, caplog):
  _png(tmp_path / "small.png", (8, 8, 3))
  _png(tmp_path / "alpha.png", (20, 20, 4))
  _png(tmp_path / "gray.png", (20, 20))
  _png(tmp_path / "plain.png", (20, 20, 3))
  source = folder.ImageFolder(str(tmp_path), resolution=16)
  assert source.scan() == dict(upscaled=1, alpha_dropped=1, grayscale_expanded=1)
  for text in ("1 of 4 images", "will be upscaled", "alpha channel", "made RGB"):
    assert text in caplog.text


# --- 8. API inputs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(trained_workdir):
  return api.load(trained_workdir)


@pytest.mark.parametrize("make, message", [
    (lambda x: (x + 1) * 127.5, r"floats in \[\d+, 255\]; expected \[-1, 1\]"),
    (lambda x: np.where(x > 0, np.nan, x), "contains NaN"),
    (lambda x: ((x + 1) * 127.5).astype(np.int64), "dtype int64; expected uint8"),
    (lambda x: x[:0], "empty batch"),
    (lambda x: x[..., :1], r"shape \(2, 16, 16, 1\) given; this model takes"),
    (lambda x: "face.png", "is the string 'face.png'"),
])
def test_bad_images_are_refused_naming_what_is_expected(model, make, message):
  x = model.images(count=2)
  with pytest.raises(api.InputError, match=message):
    model.encode(make(x))


def test_uint8_and_float_images_give_the_same_code(model):
  x = model.images(count=2)
  as_uint8 = np.round((x + 1) * 127.5).astype(np.uint8)
  np.testing.assert_allclose(model.encode(as_uint8), model.encode(as_uint8 / 127.5 - 1),
                             atol=1e-6)


def test_decode_and_images_name_the_expected_arguments(model):
  with pytest.raises(api.InputError, match=r"z_sem of shape \(2, 5\) given; expected \(2, 32\)"):
    model.decode(np.zeros((2, 5)), np.zeros((2, 16, 16, 3)))
  with pytest.raises(api.InputError, match=r"x_T of shape \(2, 8, 8, 3\) given"):
    model.decode(np.zeros((2, 32)), np.zeros((2, 8, 8, 3)))
  with pytest.raises(api.InputError, match=r"expected a list of image files \(\['a.png'\]\)"):
    model.images("a.png")


# --- 9. Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_first_ctrl_c_saves_and_exits_zero(tmp_path):
  proc = subprocess.Popen(_cli(tmp_path, "--config.train.num_steps=1000000",
                               "--config.train.checkpoint_every=0",
                               "--config.train.log_every=5"),
                          env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if "step 5/" in line:
      break
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "Traceback" not in err and "Ctrl-C: saving a checkpoint" in err
  step, state = read_state(str(tmp_path))
  assert step >= 5 and int(state["step"]) == step


def test_a_second_ctrl_c_aborts_at_once():
  before = signal.getsignal(signal.SIGINT)
  stop = preemption.StopSignal()
  try:
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.reached(1)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1)
  finally:
    stop.close()
  assert signal.getsignal(signal.SIGINT) is before


# --- 10. convert --------------------------------------------------------------------------------


def test_convert_says_what_a_text_file_named_npz_is_not(tmp_path):
  fake = tmp_path / "weights.npz"
  fake.write_text("not weights")
  with pytest.raises(convert.CheckpointMismatchError, match="is not an .npz archive") as raised:
    convert.load_state_dict(str(fake))
  assert "allow_pickle" not in str(raised.value)


# --- 11. GroupNorm ------------------------------------------------------------------------------


def _reference_group_norm(x, groups, eps=1e-5):
  xg = np.asarray(x, np.float64).reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
  mean = xg.mean(axis=(1, 3), keepdims=True)
  var = ((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True)
  return ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 10.0, 100.0, 1000.0])
def test_group_norm_is_within_1e5_of_float64_at_any_mean_over_std(ratio):
  x = (np.random.default_rng(0).standard_normal((2, 16, 16, 64)) + ratio).astype(np.float32)
  norm = layers.StableGroupNorm(num_groups=32)
  params = norm.init(jax.random.key(0), x)
  np.testing.assert_allclose(norm.apply(params, x), _reference_group_norm(x, 32), atol=1e-5)


def test_group_norm_keeps_flax_parameters_and_gradients():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 64)) * 2 + 3
  ours, flax_norm = layers.StableGroupNorm(num_groups=32), nn.GroupNorm(num_groups=32)
  params = flax_norm.init(jax.random.key(0), x)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
  assert jax.tree.structure(ours.init(jax.random.key(0), x)) == jax.tree.structure(params)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  for a, b in zip(jax.grad(loss(ours), (0, 1))(params, x),
                  jax.grad(loss(flax_norm), (0, 1))(params, x)):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=2e-4), a, b)
