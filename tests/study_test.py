"""The study program on configs/test.py: its outputs, skipping finished runs,
recording a failing one while the rest complete, and resuming after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
import pytest

from cldis_jax import config_lib, study, study_report
from conftest import REPO, config_path, subprocess_env

VAE_ALONE = {"objective.branches": ("vae",), "objective.controller.kind": "constant",
             "evaluate.representations": ("vae_mu",)}
CONFIG_FILE = f'''
from cldis_jax import config_lib
from cldis_jax.config_lib import nested

def get_config(arg=None):
  c = config_lib.load_config({config_path("test.py")!r})
  c.train.update(num_steps=4, log_every=2, checkpoint_every=2)
  c.samples.every = 0
  c.evaluate.metrics = ("factor_vae", "mig")  # two tables' worth; DCI's trees cost 4 s a run
  c.study.variants = {{name: nested(o) for name, o in {{VARIANTS}}.items()}}
  c.study.seeds = {{SEEDS}}
  return c
'''


def _write_config(path, variants, seeds) -> str:
  with open(path, "w") as f:
    f.write(CONFIG_FILE.replace("{VARIANTS}", repr(variants)).replace("{SEEDS}", repr(seeds)))
  return str(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """2 variants x 2 seeds, plus a variant whose data source does not exist."""
  tmp = tmp_path_factory.mktemp("study")
  variants = {"cldis": {}, "vae_alone": VAE_ALONE, "broken": {"data.name": "procedural/nope"}}
  config = config_lib.load_config(_write_config(tmp / "study.py", variants, (0, 1)))
  workdir = str(tmp / "out")
  summary = study.run(config, workdir)
  return dict(config=config, workdir=workdir, summary=summary)


def _result(workdir, variant, seed):
  with open(os.path.join(study.run_dir(workdir, variant, seed), study.RESULT)) as f:
    return json.load(f)


@pytest.mark.slow
def test_every_run_is_trained_evaluated_and_summarised(finished):
  workdir, summary = finished["workdir"], finished["summary"]
  with open(os.path.join(workdir, "results.json")) as f:
    stored = json.load(f)
  assert stored["summary"] == summary["summary"]
  done = [r for r in stored["runs"] if r["status"] == "completed"]
  assert sorted((r["variant"], r["seed"]) for r in done) == [
      ("cldis", 0), ("cldis", 1), ("vae_alone", 0), ("vae_alone", 1)]
  for r in done:
    assert r["step"] == 4
    assert {"beta", "loss_diff", "vae_kl", "controller_signal"} <= set(r["curves"])
    assert r["curves"]["beta"][-1][0] == 4
  # mean +- std over the seeds of each run's own numbers
  mig = [_result(workdir, "cldis", s)["metrics"]["mu_s/MIG"] for s in (0, 1)]
  cell = summary["summary"]["cldis"]["mu_s/MIG"]
  assert cell["n"] == 2 and cell["mean"] == pytest.approx(np.mean(mig))
  assert cell["std"] == pytest.approx(np.std(mig, ddof=1))
  assert set(summary["summary"]["vae_alone"]) == {
      f"vae_mu/{m}" for m in ("FactorVAE", "MIG")}
  # Until beta moves (the default controller's warm-up), CL-Dis trains its VAE
  # exactly like the VAE alone: the same vae_mu numbers.
  for s in (0, 1):
    ours, alone = _result(workdir, "cldis", s)["metrics"], _result(workdir, "vae_alone", s)[
        "metrics"]
    assert {k: v for k, v in ours.items() if k.startswith("vae_mu/")} == alone


@pytest.mark.slow
def test_the_report_declares_its_protocol_and_shows_the_table_and_plots(finished):
  workdir = finished["workdir"]
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "**Reduced protocol**" in text and "num_train=200" in text
  assert "4 of 6 runs finished, 2 failed" in text
  row = next(l for l in text.splitlines() if l.startswith("| cldis | mu_s |"))
  assert row.count("±") == 2 and row.endswith("| 2 |")
  assert "| vae_alone | vae_mu |" in text and "| vae_alone | mu_s |" not in text
  for name in ("training.png", "metrics.png"):
    with Image.open(os.path.join(workdir, name)) as image:
      assert image.size[0] > 600 and image.size[1] > 200


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_others_complete(finished):
  workdir = finished["workdir"]
  failed = [r for r in finished["summary"]["runs"] if r["status"] == "failed"]
  assert [(r["variant"], r["seed"]) for r in failed] == [("broken", 0), ("broken", 1)]
  assert all("procedural/nope" in r["error"] for r in failed)
  with open(os.path.join(study.run_dir(workdir, "broken", 0), study.FAILED)) as f:
    assert "Traceback" in json.load(f)["traceback"]
  assert "- broken seed 0:" in open(os.path.join(workdir, "results.md")).read()


@pytest.mark.slow
def test_running_again_skips_finished_runs_and_retries_failed_ones(finished):
  workdir = finished["workdir"]
  path = os.path.join(study.run_dir(workdir, "cldis", 0), study.RESULT)
  before = os.stat(path).st_mtime_ns, open(path).read()
  start = time.perf_counter()
  again = study.run(finished["config"], workdir)
  assert time.perf_counter() - start < 60  # no training, no evaluation
  assert (os.stat(path).st_mtime_ns, open(path).read()) == before
  assert again["summary"] == finished["summary"]["summary"]


def test_bad_study_settings_are_named(tmp_path):
  variants = {"cldis": {}, "vae_alone": VAE_ALONE}
  study_config = config_lib.load_config(_write_config(tmp_path / "study.py", variants, (0,)))
  tmp_path = tmp_path / "out"
  tmp_path.mkdir()
  config = study_config.copy_and_resolve_references()
  config.study.shard = "2/2"
  with pytest.raises(ValueError, match="study.shard = '2/2'"):
    study.run(config, str(tmp_path))
  config = study_config.copy_and_resolve_references()
  config.study.only = ("cldiss",)
  with pytest.raises(ValueError, match="study.only names \\['cldiss'\\]"):
    study.run(config, str(tmp_path))
  config = study_config.copy_and_resolve_references()
  config.study.variants.vae_alone.objective.brnches = ("vae",)
  with pytest.raises(ValueError, match="brnches .did you mean branches"):
    study.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing written before the configs are checked


def test_the_report_gives_mean_and_sample_std_over_seeds(tmp_path):
  """Records with known numbers: the cells are mean ± sample std, n counts the
  finished seeds, a failed run is listed, and the plots are drawn."""
  config = config_lib.load_config(_write_config(
      tmp_path / "study.py", {"cldis": {}, "vae_alone": VAE_ALONE}, (0, 1, 2)))
  curves = {"beta": [[2, 1.0], [4, 1.5]], "loss_diff": [[2, 0.5], [4, 0.4]]}
  records = [dict(status="completed", variant="cldis", seed=s, curves=curves,
                  metrics={"mu_s/MIG": m, "mu_s/DCI-D": 0.5}) for s, m in ((0, 0.2), (1, 0.4))]
  records.append(dict(status="failed", variant="cldis", seed=2, error="ValueError: boom\nmore"))
  records.append(dict(status="completed", variant="vae_alone", seed=0, curves=curves,
                      metrics={"vae_mu/MIG": 0.3}))
  out = study_report.write(config, str(tmp_path), records)
  assert out["summary"]["cldis"]["mu_s/MIG"]["std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
  text = open(tmp_path / "results.md").read()
  assert "| cldis | mu_s | 0.300 ± 0.141 | 0.500 ± 0.000 | 2 |" in text
  assert "| vae_alone | vae_mu | 0.300 | – | 1 |" in text
  assert "3 of 6 runs finished, 1 failed" in text and "- cldis seed 2: ValueError: boom" in text
  for name in ("training.png", "metrics.png"):
    with Image.open(tmp_path / name) as image:
      assert image.size[0] > 600 and image.size[1] > 200


@pytest.mark.slow
def test_a_run_evaluated_at_its_last_step_in_training_is_not_evaluated_again(
    tmp_path, monkeypatch):
  config = config_lib.load_config(_write_config(tmp_path / "study.py",
                                                {"vae_alone": VAE_ALONE}, (0,)))
  config.evaluate.every = config.train.num_steps
  def evaluated_twice(*args, **kwargs):
    raise AssertionError("evaluate.run called after training evaluated the last step")
  monkeypatch.setattr(study.evaluate, "run", evaluated_twice)
  study.run(config, str(tmp_path / "out"))
  result = _result(str(tmp_path / "out"), "vae_alone", 0)
  assert result["status"] == "completed", result
  with open(result["evaluation"]) as f:
    written = json.load(f)
  assert written["step"] == result["step"] == 4
  assert result["metrics"] == study.eval_report.headline(written)


@pytest.mark.slow
def test_a_killed_study_resumes_and_skips_what_finished(tmp_path):
  config_file = _write_config(tmp_path / "study.py", {"vae_alone": VAE_ALONE}, (0, 1))
  workdir = str(tmp_path / "out")
  cmd = [sys.executable, "-m", "cldis_jax.main", "--config", config_file,
         "--workdir", workdir, "--mode=study"]
  first = os.path.join(study.run_dir(workdir, "vae_alone", 0), study.RESULT)
  proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.2)
    assert os.path.exists(first), "the first run never finished"
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  before = open(first).read()
  out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                       timeout=600, check=True)
  assert open(first).read() == before
  to_do = int(out.stderr.split(" to do")[0].rsplit(", ", 1)[1])
  assert to_do < 2, out.stderr[-2000:]
  for seed in (0, 1):
    assert _result(workdir, "vae_alone", seed)["status"] == "completed"
  assert "| vae_alone | vae_mu |" in out.stdout and "| 2 |" in out.stdout
