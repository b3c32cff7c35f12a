"""The command line: `python -m cldis_jax.main --config ... --mode=summary`."""

import os
import subprocess
import sys

from conftest import REPO, config_path


def _run(*args):
  return subprocess.run([sys.executable, "-m", "cldis_jax.main", *args], capture_output=True,
                        text=True, cwd=REPO, env=dict(os.environ), check=False)


def test_summary_prints_official_counts_without_allocating():
  result = _run("--config", config_path("ffhq.py:64"), "--mode=summary")
  assert result.returncode == 0, result.stderr[-2000:]
  rows, parents = {}, []
  for line in result.stdout.splitlines()[1:-1]:
    name, count = line.split()
    depth = (len(line) - len(line.lstrip())) // 2
    parents = parents[:depth] + [name]
    rows["/".join(parents)] = count
  assert rows["diffae/unet"] == "71,518,723"
  assert rows["diffae/encoder"] == "19,320,512"
  assert rows["diffae"] == "90,839,235"
  assert {"vae/encoder", "vae/decoder", "head", "total"} <= rows.keys()


def test_bad_resolution_names_the_value_and_the_valid_ones():
  result = _run("--config", config_path("ffhq.py:100"), "--mode=summary")
  assert result.returncode != 0
  assert "resolution '100' is not one of [64, 128, 256]" in result.stderr


def test_unknown_override_key_is_refused():
  result = _run("--config", config_path("test.py"), "--config.model.diffae.base_chanels=3")
  assert result.returncode != 0
  assert "base_channels" in result.stderr


def test_training_is_the_default_mode_and_needs_a_workdir():
  result = _run("--config", config_path("test.py"))
  assert result.returncode != 0
  assert "--mode=train needs --workdir" in result.stderr


def test_data_mode_reports_the_dataset_and_writes_previews(tmp_path):
  result = _run("--config", config_path("test.py"), "--mode=data", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "procedural/shapes3d: 480,000 examples of 16x16x3" in result.stdout
  assert "floor_hue 10, wall_hue 10" in result.stdout
  assert sorted(os.listdir(tmp_path)) == ["data_batch.png", "data_factors.png"]


def test_data_mode_names_a_missing_folder(tmp_path):
  result = _run("--config", config_path("test.py"), "--mode=data", f"--workdir={tmp_path}",
                "--config.data.name=folder", f"--config.data.dir={tmp_path}/photos")
  assert result.returncode != 0
  assert f"{tmp_path}/photos" in result.stderr and "does not exist" in result.stderr
