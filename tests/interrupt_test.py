"""SIGTERM and Ctrl-C in the programs that read a trained run (evaluate,
edit) and in the study's scoring: each stops with exit 130 and one line,
leaves no half-written metrics.json, grid or temporary file, and a rerun
completes."""

import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from cldis_jax import errors
from conftest import REPO, config_path, subprocess_env


def _start(args, marker: str):
  """Starts `python -m cldis_jax.main args`; returns (the process, its stderr
  lines so far) once a stderr line contains `marker`."""
  # A shell's background jobs ignore SIGINT, and a Python started so never
  # handles Ctrl-C: give the child the default disposition a terminal gives.
  proc = subprocess.Popen([sys.executable, "-m", "cldis_jax.main", *args], cwd=REPO,
                          env=subprocess_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  lines, seen = [], threading.Event()

  def read():
    for line in proc.stderr:
      lines.append(line)
      if marker in line:
        seen.set()
  threading.Thread(target=read, daemon=True).start()
  if not seen.wait(timeout=300):
    proc.kill()
    pytest.fail(f"never logged {marker!r}: {''.join(lines)[-3000:]}")
  return proc, lines


def _stop(proc, lines, signum) -> str:
  proc.send_signal(signum)
  proc.wait(timeout=120)
  time.sleep(0.2)  # the reader thread's last lines
  err = "".join(lines)
  assert proc.returncode == errors.INTERRUPTED_CODE, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
  assert err.strip().splitlines()[-1] == (f"stopped by {name}: nothing half-written; "
                                          "run it again to complete")
  return err


def _half_written(directory) -> list[str]:
  return glob.glob(os.path.join(directory, "**", "*.tmp*"), recursive=True)


@pytest.mark.slow
@pytest.mark.parametrize("mode,signum,marker,output", [
    ("evaluate", signal.SIGTERM, "evaluating ", "eval/*/metrics.json"),
    ("edit", signal.SIGINT, "devices:", "edit/*/edit.json"),
])
def test_a_read_only_program_stops_at_the_signal_and_a_rerun_completes(
    trained_workdir, tmp_path, mode, signum, marker, output):
  workdir = str(tmp_path / "run")
  # Other tests of the shared trained workdir may have evaluated or edited it.
  shutil.copytree(trained_workdir, workdir, ignore=shutil.ignore_patterns("eval", "edit"))
  # 250 DDIM steps each way keep the edit busy for seconds after its first
  # log line, even with a warm compilation cache.
  args = ["--config", config_path("test.py"), f"--workdir={workdir}", f"--mode={mode}",
          "--config.evaluate.metrics=('mig','ctd')", "--config.edit.directions=mu_s",
          "--config.edit.invert_steps=250", "--config.edit.decode_steps=250"]
  proc, lines = _start(args, marker)
  _stop(proc, lines, signum)
  assert not glob.glob(os.path.join(workdir, output)) and not _half_written(workdir)
  rerun = subprocess.run([sys.executable, "-m", "cldis_jax.main", *args], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert glob.glob(os.path.join(workdir, output)) and not _half_written(workdir)


STUDY = """
from cldis_jax import config_lib

def get_config(arg=None):
  c = config_lib.load_config({test!r})
  c.train.update(num_steps=4, checkpoint_every=4, log_every=4)
  c.samples.every = 0
  c.evaluate.metrics = ("mig", "ctd")
  c.study.variants = {{"cldis": {{}}}}
  c.study.seeds = (0,)
  return c
"""


@pytest.mark.slow
def test_a_study_stopped_while_scoring_resumes_and_completes(tmp_path):
  config = tmp_path / "study.py"
  config.write_text(STUDY.format(test=config_path("test.py")))
  workdir = str(tmp_path / "out")
  args = ["--config", str(config), f"--workdir={workdir}", "--mode=study"]
  proc, lines = _start(args, "evaluating ")  # training finished, scoring under way
  _stop(proc, lines, signal.SIGTERM)
  assert not glob.glob(os.path.join(workdir, "**", "result.json"), recursive=True)
  assert not _half_written(workdir)
  rerun = subprocess.run([sys.executable, "-m", "cldis_jax.main", *args], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "already trained to step 4" in rerun.stderr
  assert glob.glob(os.path.join(workdir, "**", "eval", "4", "metrics.json"), recursive=True)
  assert not _half_written(workdir)
