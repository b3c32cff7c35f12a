"""The fault matrix: every kind of checkpoint x every file of its newest
checkpoint x truncated / overwritten / deleted x every program that reads or
writes it. The outcome is always one of three: the program falls back to the
newest intact checkpoint (setting the damaged one aside) and finishes; it
stops with a one-line error; or it warns in one line, skips what needed the
checkpoint and finishes the rest. Never a traceback, and a program that only
reads moves and deletes nothing.

Two layers keep this fast. Every (kind, file, damage) is read through the
checkpoint API, which must give the intact values or `CorruptCheckpointError`
(cheap: no program runs). Each program then meets every kind through a
representative damage in the fast tier, and through the other files in the
slow tier: the first layer shows that every damage reaches the programs as
that same error.

A new kind of checkpoint is one line in KINDS (and its programs' expected
outcomes in EXPECTED).
"""

import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from cldis_jax import (api, checkpoint, config_lib, edit, errors, evaluate, latent,
                       models as models_lib, navigate, navigation, parallel, sample, study, train,
                       train_latent, train_step)
from conftest import REPO, config_path, subprocess_env

# kind -> (its checkpoints under the workdir, its newest step in the fixture)
KINDS = {
    "training": ("checkpoints", 4),
    "navigation": ("navigation/checkpoints", 6),
    "latent": ("latent/checkpoints", 6),
}

# file -> its paths in a checkpoint's step directory ("arrays": every data file,
# since one of them can hold only data that a later write superseded)
FILES = {
    "arrays": lambda d: glob.glob(f"{d}/state/ocdbt.process_0/d/*"),
    "array index": lambda d: [f"{d}/state/manifest.ocdbt"],
    "state metadata": lambda d: [f"{d}/state/_METADATA"],
    "sharding": lambda d: [f"{d}/state/_sharding"],
    "stored config": lambda d: [f"{d}/config/metadata"],
}

DAMAGES = ("truncate", "random bytes", "delete")


def damage(path: str, how: str, keep: float = 0.5) -> None:
  """`keep`: the fraction of the file a truncation leaves."""
  if how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(int(os.path.getsize(path) * keep))
  elif how == "random bytes":
    size = max(os.path.getsize(path), 64)
    with open(path, "wb") as f:
      f.write(np.random.default_rng(0).bytes(size))
  else:
    os.remove(path)


def _config():
  config = config_lib.load_config(config_path("test.py"))
  config.train.update(num_steps=4, checkpoint_every=2, log_every=2)
  config.samples.every = 0
  config.evaluate.metrics = ("mig",)  # the cheapest; the checkpoint reads are what is tested
  return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """configs/test.py trained 4 steps (checkpoints 2, 4), navigated 6 (3, 6),
  its latent DDIM trained 6 (3, 6)."""
  path = str(tmp_path_factory.mktemp("faults") / "run")
  train.train_and_evaluate(_config(), path)
  navigate.run(_config(), path)
  train_latent.run(_config(), path)
  return path


def _damaged_copy(workdir, tmp_path, kind, file, how, keep=0.5) -> tuple[str, str]:
  """(a copy of the workdir with that file of the kind's newest checkpoint
  damaged, the newest checkpoint's directory in the copy)."""
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  subdir, step = KINDS[kind]
  newest = os.path.join(copy, subdir, str(step))
  paths = FILES[file](newest)
  assert paths and all(os.path.isfile(p) for p in paths), (file, paths)
  for path in paths:
    damage(path, how, keep)
  return copy, newest


def _checkpoint_files(workdir) -> set[str]:
  """Every file of every kind's checkpoints (what a reader must leave alone)."""
  return {os.path.relpath(os.path.join(root, n), workdir)
          for subdir, _ in KINDS.values()
          for root, _, names in os.walk(os.path.join(workdir, subdir)) for n in names}


# --- 1. every damage is the one error, or harmless ------------------------------------------


@pytest.fixture(scope="module")
def intact(workdir):
  """kind -> (abstract state, the newest checkpoint's state) of the fixture."""
  out = {}
  for kind, (subdir, step) in KINDS.items():
    ckpt = checkpoint.Checkpoints(workdir, async_save=False, read_only=True, subdir=subdir)
    config = ckpt.restore_config(step)
    models = models_lib.build_models(config.model)
    abstract = {
        "training": lambda: train_step.abstract_state(config, models, parallel.data_mesh()),
        "navigation": lambda: navigation.abstract_state(config, navigation.build(config)),
        "latent": lambda: latent.abstract_state(config, latent.build(config, models.code_dim)),
    }[kind]()
    out[kind] = abstract, ckpt.restore(abstract, step)
    ckpt.close()
  return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("how", DAMAGES)
def test_every_damaged_file_reads_intact_or_raises_the_one_error(workdir, intact, tmp_path, kind,
                                                                  file, how, capfd):
  """Read as evaluate and edit read (the programs below show what each does
  with the error; train and navigate's fallback is among them)."""
  subdir, step = KINDS[kind]
  abstract, expected = intact[kind]
  copy, newest = _damaged_copy(workdir, tmp_path, kind, file, how)
  ckpt = checkpoint.Checkpoints(copy, async_save=False, read_only=True, subdir=subdir)
  for read in (lambda: ckpt.restore_config(step), lambda: ckpt.restore(abstract, step)):
    try:
      value = read()
    except checkpoint.CorruptCheckpointError as e:
      assert isinstance(e, errors.UserError) and "\n" not in str(e)
      assert str(e).startswith(f"checkpoint {newest} cannot be read (")
    else:  # a file this read does not need (the config for the state, a deleted _sharding)
      if not isinstance(value, config_lib.ml_collections.ConfigDict):
        jax.tree.map(np.testing.assert_array_equal, value, expected)
  ckpt.close()
  assert "Traceback" not in capfd.readouterr().err


def test_the_damaged_file_is_named(workdir, tmp_path):
  copy, newest = _damaged_copy(workdir, tmp_path, "navigation", "stored config", "delete")
  with pytest.raises(checkpoint.CorruptCheckpointError,
                     match=re.escape(f"{newest} cannot be read (config/metadata: ")):
    navigation.restore(copy)


# --- 2. each program: falls back, stops, or warns --------------------------------------------


def _train(copy):
  return train.train_and_evaluate(_config(), copy)


def _navigate(copy):
  return navigate.run(_config(), copy)


def _evaluate(copy):
  return evaluate.run(_config(), copy)


def _edit(directions):
  def run(copy):
    config = _config()
    config.edit.directions = directions
    return edit.run(config, copy)
  return run


def _api(copy):
  return api.load(copy).directions("navigation")


def _study(copy):
  return study.train_and_score(_config(), copy)


def _train_latent(copy):
  return train_latent.run(_config(), copy)


def _sample(copy):
  return sample.run(_config(), copy)


def _api_sample(copy):
  return api.load(copy).sample(2)


def _evaluate_generation(copy):
  config = _config()
  config.evaluate.metrics = ("generation",)
  return evaluate.run(config, copy)


PROGRAMS = {"train": _train, "navigate": _navigate, "evaluate": _evaluate,
            "edit": _edit("navigation"), "edit mu_s": _edit("mu_s"), "api": _api,
            "study scoring": _study, "train_latent": _train_latent, "sample": _sample,
            "evaluate generation": _evaluate_generation, "api sample": _api_sample}

# (kind, program) -> what it does with a damaged newest checkpoint of that kind
EXPECTED = {
    ("training", "train"): "falls back",
    ("training", "study scoring"): "falls back",
    ("training", "navigate"): "stops",  # reads the trained model; writes navigation's
    ("training", "evaluate"): "stops",
    ("training", "edit"): "stops",
    ("training", "api"): "stops",
    ("navigation", "navigate"): "falls back",
    ("navigation", "evaluate"): "warns",  # the learned directions are optional to it
    ("navigation", "study scoring"): "warns",
    ("navigation", "edit"): "stops",  # it was asked to edit along them
    ("navigation", "edit mu_s"): "warns",  # z_sem's covariance, measured instead
    ("navigation", "api"): "stops",
    ("training", "train_latent"): "stops",  # reads the trained model; writes the latent's
    ("training", "sample"): "stops",
    ("latent", "train_latent"): "falls back",
    ("latent", "sample"): "stops",
    ("latent", "evaluate generation"): "warns",  # the generation column is skipped
    ("latent", "api sample"): "stops",
}

# The programs started with a config (as the command line always does): they
# read a training checkpoint's state, not the config stored with it.
GIVEN_A_CONFIG = ("navigate", "evaluate", "edit", "edit mu_s", "train_latent", "sample",
                  "evaluate generation")

# Each (kind, program) meets two of the three parts of a checkpoint (its
# arrays, its metadata, its stored config), rotating so that every part meets
# every program kind: one in the fast tier, the other in the slow tier.
_PARTS = (("arrays", "array index"), ("state metadata", "sharding"),
          ("stored config", "stored config"))


def _cases():
  for i, (kind, program) in enumerate(EXPECTED):
    for j in range(2):
      file = _PARTS[(i + j) % len(_PARTS)][i % 2]
      how = "truncate" if file == "sharding" else DAMAGES[(i + j) % len(DAMAGES)]
      yield pytest.param(kind, program, file, how, id=f"{kind}-{program}-{file}-{how}",
                         marks=() if j == 0 else pytest.mark.slow)


@pytest.mark.parametrize("kind,program,file,how", list(_cases()))
def test_a_program_falls_back_stops_or_warns(workdir, tmp_path, caplog, capfd, kind, program,
                                             file, how):
  # A data file can end in bytes that no read reaches (how much varies from
  # write to write), so half of every one may still read intact, which the
  # first layer allows. A program meets the truncation that surely loses data.
  keep = 0.0 if file == "arrays" else 0.5
  copy, newest = _damaged_copy(workdir, tmp_path, kind, file, how, keep)
  subdir, step = KINDS[kind]
  before = _checkpoint_files(copy)
  outcome = EXPECTED[(kind, program)]
  if (kind, file) == ("training", "stored config") and program in GIVEN_A_CONFIG:
    outcome = "unaffected"  # it reads the state only
  caplog.set_level(logging.WARNING)
  if outcome == "stops":
    with pytest.raises(checkpoint.CorruptCheckpointError) as raised:
      PROGRAMS[program](copy)
    assert isinstance(raised.value, errors.UserError) and "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"checkpoint {newest} cannot be read")
  else:
    PROGRAMS[program](copy)
    said = [r.getMessage() for r in caplog.records if f"{newest} cannot be read" in r.getMessage()]
    assert len(said) == (outcome != "unaffected") and "\n" not in "".join(said), said
  if outcome == "falls back":
    assert os.path.isdir(os.path.join(copy, subdir + ".corrupt", str(step)))
    assert os.path.isdir(newest)  # redone
  else:
    assert _checkpoint_files(copy) == before  # nothing moved, deleted or added
  if (kind, program) in (("navigation", "evaluate"), ("latent", "evaluate generation")):
    metrics = json.load(open(os.path.join(copy, "eval", "4", "metrics.json")))
    assert "cannot be read" in metrics["skipped"][kind.replace("latent", "generation")]
  assert "Traceback" not in capfd.readouterr().err


def test_every_program_is_in_the_matrix():
  assert {p for _, p in EXPECTED} == set(PROGRAMS)
  assert {k for k, _ in EXPECTED} == set(KINDS)


# --- 3. one guarded path -------------------------------------------------------------------


def test_no_checkpoint_is_read_outside_the_guarded_path():
  """Every read of a checkpoint goes through checkpoint.Checkpoints."""
  direct = re.compile(r"(manager|checkpointer|Checkpointer\(\))\s*\.\s*(restore|item_metadata|"
                      r"metadata)\(|item_metadata\(|ocp\.args\.\w*Restore|PyTreeRestore")
  package = os.path.join(os.path.dirname(os.path.dirname(__file__)), "cldis_jax")
  offenders = []
  for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True):
    if os.path.basename(path) == "checkpoint.py":
      continue
    for n, line in enumerate(open(path), 1):
      if direct.search(line):
        offenders.append(f"{os.path.relpath(path, package)}:{n}: {line.strip()}")
  assert not offenders, offenders


@pytest.mark.slow
def test_the_command_line_evaluates_past_overwritten_navigation_files(workdir, tmp_path):
  """The report that started this: --mode=evaluate died with a traceback on a
  navigation checkpoint whose files were overwritten."""
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  newest = os.path.join(copy, "navigation", "checkpoints", "6")
  for path in [*FILES["stored config"](newest), *FILES["sharding"](newest)]:
    damage(path, "random bytes")
  result = subprocess.run(
      [sys.executable, "-m", "cldis_jax.main", "--config", config_path("test.py"),
       f"--workdir={copy}", "--mode=evaluate", "--config.evaluate.metrics=('mig',)"],
      cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  warned = [l for l in result.stderr.splitlines() if f"{newest} cannot be read" in l]
  assert len(warned) == 1 and "navigation directions skipped" in warned[0]
  assert "navigation: skipped (checkpoint" in result.stdout
  assert os.path.isdir(newest)  # a reader moves nothing
