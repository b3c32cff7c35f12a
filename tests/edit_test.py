"""Editing and the Python API on a configs/test.py checkpoint, plus the exact
round trip of inversion and decoding with an analytic denoiser."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cldis_jax import api, data, diffusion, edit, grids, inference
from cldis_jax.data.folder import CorruptImageError
from conftest import REPO, config_path, subprocess_env

FULL = diffusion.Diffusion.create("linear", 1000)


def test_inversion_then_decoding_with_fewer_steps_returns_the_image():
  """Edits invert with more DDIM steps than they decode with; an exact
  denoiser still gets the image back (the x_T of any step count lies on the
  same deterministic trajectory)."""
  x0 = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3), minval=-0.9, maxval=0.9)
  abar = jnp.asarray(FULL.alphas_cumprod, jnp.float32)

  def eps_fn(x, t):
    a = abar[t][:, None, None, None]
    return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)

  x_T = FULL.respace(50).ddim_invert(eps_fn, x0)
  np.testing.assert_allclose(FULL.respace(10).ddim_sample(eps_fn, x_T), x0, atol=1e-5)


def test_slerp_keeps_the_ends_and_the_norm():
  a, b = jax.random.normal(jax.random.key(1), (2, 3, 64))
  alpha = jnp.linspace(0, 1, 5)
  out = np.asarray(inference.slerp(a, b, alpha))  # (3, 5, 64)
  np.testing.assert_allclose(out[:, 0], a, atol=1e-5)
  np.testing.assert_allclose(out[:, -1], b, atol=1e-5)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  mid = np.asarray(inference.slerp(unit(a), unit(b), alpha))
  np.testing.assert_allclose(np.linalg.norm(mid, axis=-1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def model(trained_workdir):
  return api.load(trained_workdir)


@pytest.mark.slow
def test_api_round_trip_equals_the_edit_grids_strength_zero_column(model):
  x = model.images(count=3)
  assert x.shape == (3, 16, 16, 3) and x.min() >= -1 and x.max() <= 1
  z = model.encode(x)
  x_T = model.invert(x)
  recon = model.decode(z, x_T)
  frames = model.traverse(x, [-2.0, 0.0, 2.0], kind="mu_s")
  assert frames.shape == (3, model.config.model.latent_dim, 3, 16, 16, 3)
  for k in range(frames.shape[1]):
    np.testing.assert_allclose(frames[:, k, 1], recon, atol=1e-5)
  np.testing.assert_allclose(model.edit(x, 1, [0.0], kind="mu_s")[:, 0], recon, atol=1e-5)
  np.testing.assert_allclose(model.reconstruct(x), recon, atol=1e-6)


@pytest.mark.slow
def test_mu_s_edits_move_only_their_axis_of_mu_s(model):
  """z_sem + s * sigma_j * pinv_row_j changes mu_s[j] by s * sigma_j and leaves
  the other axes where they were (the head is linear)."""
  x = model.images(count=2)
  directions, sigma = model.directions("mu_s")
  z = model.encode(x)
  mu = model.representation(x)
  head = model.models.head
  moved, _ = head.apply({"params": model.params["head"]}, z + 1.5 * sigma[2] * directions[2])
  delta = np.asarray(moved) - mu
  expected = np.zeros_like(delta)
  expected[:, 2] = 1.5 * sigma[2]
  np.testing.assert_allclose(delta, expected, atol=2e-4)


def test_api_accepts_uint8_and_single_images_and_rejects_wrong_shapes(model):
  x = model.images(count=1)
  u8 = grids.to_uint8(x)
  np.testing.assert_allclose(model.encode(u8[0]), model.encode(data.to_model_range(u8)),
                             atol=1e-6)
  with pytest.raises(ValueError, match=r"images of shape \(8, 8, 3\) given; this model "
                                       r"takes \(16, 16, 3\)"):
    model.encode(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match=r"direction indices \[9\] out of range"):
    model.edit(x, 9, [1.0], kind="mu_s")
  with pytest.raises(ValueError, match="direction kind 'pca' is not one of"):
    model.directions("pca")


@pytest.mark.slow
def test_interpolation_ends_are_the_reconstructions(model):
  x = model.images(count=2)
  mixed = model.interpolate(x[:1], x[1:], [0.0, 0.5, 1.0])
  assert mixed.shape == (1, 3, 16, 16, 3)
  np.testing.assert_allclose(mixed[0, 0], model.reconstruct(x[:1])[0], atol=1e-5)
  np.testing.assert_allclose(mixed[0, 2], model.reconstruct(x[1:])[0], atol=1e-5)


@pytest.mark.slow
def test_edit_mode_writes_one_grid_per_direction_from_image_files(trained_workdir, tmp_path):
  paths = []
  for i, size in enumerate([(40, 30), (16, 16)]):  # any size: resized and cropped
    path = tmp_path / f"photo{i}.png"
    Image.fromarray(np.full(size[::-1] + (3,), 60 * i + 40, np.uint8)).save(path)
    paths.append(str(path))
  result = subprocess.run(
      [sys.executable, "-m", "cldis_jax.main", "--config", config_path("test.py"),
       f"--workdir={trained_workdir}", "--mode=edit", "--config.edit.directions=mu_s",
       f"--images={','.join(paths)}"],
      capture_output=True, text=True, cwd=REPO, env=subprocess_env(), check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = os.path.join(trained_workdir, "edit", "4")
  summary = json.load(open(os.path.join(out, "edit.json")))
  assert summary["images"] == paths and summary["strengths"] == [-3.0, 0.0, 3.0]
  assert sorted(os.listdir(out)) == sorted(
      ["edit.json", "interpolation.png"] + [f"mu_s_{k:02d}.png" for k in range(4)])
  grid = np.asarray(Image.open(os.path.join(out, "mu_s_00.png")))
  # 2 rows x (input + 3 strengths) of 16 px, 2 px borders, 4x enlarged
  assert grid.shape == ((2 * 18 + 2) * 4, (4 * 18 + 2) * 4, 3)
  column = 2 * 18 * 4  # left border of the strength-0 column: red
  assert tuple(grid[4, column + 1]) == (220, 30, 30)
  assert tuple(grid[4, 1]) == (255, 255, 255)


def test_bad_image_paths_are_named_and_nothing_is_written(trained_workdir, tmp_path,
                                                          test_config):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_workdir, workdir, ignore=shutil.ignore_patterns("edit"))
  config = test_config.copy_and_resolve_references()
  config.edit.directions = "mu_s"
  config.edit.images = (str(tmp_path / "missing.png"),)
  with pytest.raises(FileNotFoundError, match="image '.*missing.png' does not exist"):
    edit.run(config, workdir)
  not_image = tmp_path / "notes.png"
  not_image.write_text("not an image")
  config.edit.images = (str(not_image),)
  with pytest.raises(CorruptImageError, match="cannot read image .*notes.png"):
    edit.run(config, workdir)
  config.edit.images = (str(tmp_path),)
  with pytest.raises(FileNotFoundError, match="is a directory"):
    edit.run(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "edit"))


def test_even_strength_counts_and_unknown_direction_kinds_are_refused(trained_workdir,
                                                                       test_config):
  config = test_config.copy_and_resolve_references()
  config.edit.num_strengths = 4
  with pytest.raises(ValueError, match="edit.num_strengths=4 must be odd"):
    edit.run(config, trained_workdir)
  config.edit.num_strengths = 3
  config.edit.directions = "vae"
  with pytest.raises(ValueError, match="edit.directions 'vae' is not one of"):
    edit.run(config, trained_workdir)
  config.edit.directions = "navigation"  # navigation has not run on this workdir
  with pytest.raises(FileNotFoundError, match="no navigation checkpoint .*--mode=navigate"):
    edit.run(config, trained_workdir)


def test_configs_stored_before_a_section_existed_get_its_defaults(tmp_path):
  """Runs trained before `edit` / `navigate` existed still load through the API."""
  from cldis_jax import checkpoint, config_lib  # pylint: disable=g-import-not-at-top
  old = config_lib.base_config()
  del old["edit"]
  old.model.latent_dim = 3
  ckpt = checkpoint.Checkpoints(str(tmp_path), async_save=False)
  ckpt.save(1, {"x": np.zeros(2, np.float32)}, old)
  ckpt.close()
  stored = checkpoint.stored_config(str(tmp_path))
  assert stored.model.latent_dim == 3
  assert stored.edit == config_lib.base_config().edit
