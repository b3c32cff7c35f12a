"""Official-checkpoint import: exact key coverage both ways, layouts, file formats."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from cldis_jax import config_lib, convert, models
from conftest import REPO, config_path, read_official_keys


def _diffae_template(spec):
  config = config_lib.load_config(config_path(spec))
  return models.abstract_params(models.build_models(config.model))["diffae"]


@pytest.fixture(scope="module")
def ffhq64_template():
  return _diffae_template("ffhq.py:64")


@pytest.fixture(scope="module")
def ffhq64_random_state_dict():
  rng = np.random.default_rng(0)
  return {k: rng.standard_normal(shape, dtype=np.float32)
          for k, shape in read_official_keys(64).items()}


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_our_tree_corresponds_exactly_to_the_official_keys(resolution):
  expected = convert.expected_keys(_diffae_template(f"ffhq.py:{resolution}"))
  assert expected == read_official_keys(resolution)


def test_official_dict_maps_onto_every_leaf_and_back(ffhq64_template, ffhq64_random_state_dict):
  params = convert.from_torch(ffhq64_random_state_dict, ffhq64_template)
  assert jax.tree.structure(params) == jax.tree.structure(ffhq64_template)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(ffhq64_template)):
    assert got.shape == want.shape
  back = convert.to_torch(params)
  assert back.keys() == ffhq64_random_state_dict.keys()
  for key, value in ffhq64_random_state_dict.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_layouts_follow_the_spec(ffhq64_template, ffhq64_random_state_dict):
  sd = ffhq64_random_state_dict
  flat = traverse_util.flatten_dict(convert.from_torch(sd, ffhq64_template))
  # Conv2d (O, I, kh, kw) -> (kh, kw, I, O)
  np.testing.assert_array_equal(flat[("unet", "input_blocks_4_0", "in_conv", "kernel")],
                                sd["input_blocks.4.0.in_layers.2.weight"].transpose(2, 3, 1, 0))
  # Conv1d k=1 (3C, C, 1) -> Dense (C, 3C)
  np.testing.assert_array_equal(flat[("unet", "input_blocks_7_1", "qkv", "kernel")],
                                sd["input_blocks.7.1.qkv.weight"][..., 0].T)
  # Linear (O, I) -> Dense (I, O); GroupNorm weight -> scale
  np.testing.assert_array_equal(flat[("unet", "time_embed_0", "kernel")],
                                sd["time_embed.time_embed.0.weight"].T)
  np.testing.assert_array_equal(flat[("encoder", "out_norm", "scale")], sd["encoder.out.0.weight"])
  np.testing.assert_array_equal(flat[("encoder", "out_conv", "kernel")][0, 0],
                                sd["encoder.out.3.weight"][:, :, 0, 0].T)


def test_a_missing_key_is_named(ffhq64_template, ffhq64_random_state_dict):
  sd = dict(ffhq64_random_state_dict)
  del sd["output_blocks.5.2.emb_layers.1.weight"]
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"1 missing key\(s\): output_blocks\.5\.2\.emb_layers\.1\.weight"):
    convert.from_torch(sd, ffhq64_template)


def test_an_unexpected_key_is_named(ffhq64_template, ffhq64_random_state_dict):
  sd = dict(ffhq64_random_state_dict, **{"input_blocks.1.0.extra.weight": np.zeros(3)})
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"1 unexpected key\(s\): input_blocks\.1\.0\.extra\.weight"):
    convert.from_torch(sd, ffhq64_template)


def test_a_misshaped_key_is_named(ffhq64_template, ffhq64_random_state_dict):
  sd = dict(ffhq64_random_state_dict)
  sd["encoder.out.3.weight"] = np.zeros((512, 256, 1, 1), np.float32)
  with pytest.raises(convert.CheckpointMismatchError,
                     match=r"encoder\.out\.3\.weight has shape \(512, 256, 1, 1\), "
                           r"the config expects \(512, 512, 1, 1\)"):
    convert.from_torch(sd, ffhq64_template)


def test_a_checkpoint_of_another_resolution_is_rejected(ffhq64_random_state_dict):
  with pytest.raises(convert.CheckpointMismatchError, match="missing key"):
    convert.from_torch(ffhq64_random_state_dict, _diffae_template("ffhq.py:128"))


def _lightning_checkpoint(inner):
  state = {f"ema_model.{k}": v for k, v in inner.items()}
  state.update({f"model.{k}": 0 * v for k, v in inner.items()})
  state["x_T"] = np.zeros((2, 3, 16, 16), np.float32)
  state["ema_model.latent_net.layers.0.linear.weight"] = np.zeros((4, 4), np.float32)
  return {"state_dict": state, "global_step": 123}


@pytest.fixture(scope="module")
def tiny_official(tiny_params):
  return tiny_params["diffae"], convert.to_torch(tiny_params["diffae"])


@pytest.mark.slow
def test_lightning_dict_selects_the_ema_weights(tiny_official):
  params, inner = tiny_official
  selected = convert.inner_state_dict(_lightning_checkpoint(inner))
  assert selected.keys() == inner.keys()  # model.*, x_T and latent_net.* left out
  restored = convert.from_torch(selected, params)
  jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(np.asarray, params))


def test_npz_file_round_trip(tmp_path, tiny_official):
  params, inner = tiny_official
  path = str(tmp_path / "weights.npz")
  np.savez(path, **inner)
  restored = convert.load_official(path, params)
  jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(np.asarray, params))


def test_lightning_ckpt_file_round_trip(tmp_path, tiny_official):
  torch = pytest.importorskip("torch")
  params, inner = tiny_official
  ckpt = _lightning_checkpoint(inner)
  ckpt["state_dict"] = {k: torch.from_numpy(np.array(v)) for k, v in ckpt["state_dict"].items()}
  path = str(tmp_path / "last.ckpt")
  torch.save(ckpt, path)
  restored = convert.load_official(path, params)
  jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(np.asarray, params))


class _Arbitrary:  # stands for any pickled object in an untrusted file
  pass


def test_arbitrary_pickled_objects_are_refused(tmp_path, tiny_official):
  torch = pytest.importorskip("torch")
  path = str(tmp_path / "unsafe.ckpt")
  torch.save({"state_dict": {}, "hyper_parameters": _Arbitrary()}, path)
  with pytest.raises(convert.CheckpointMismatchError, match="weights-only"):
    convert.load_official(path, tiny_official[0])


def test_missing_file_names_the_path(tiny_official):
  with pytest.raises(FileNotFoundError, match="nowhere/last.ckpt"):
    convert.load_official("nowhere/last.ckpt", tiny_official[0])


def test_convert_command_writes_a_restorable_checkpoint(tmp_path, tiny_official):
  params, inner = tiny_official
  npz, out = str(tmp_path / "w.npz"), str(tmp_path / "converted")
  np.savez(npz, **inner)
  result = subprocess.run(
      [sys.executable, "-m", "cldis_jax.convert", "--config", config_path("test.py"),
       "--checkpoint", npz, "--output", out],
      capture_output=True, text=True, cwd=REPO, env=dict(os.environ), check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "converted" in result.stdout
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restored = ocp.StandardCheckpointer().restore(out)
  jax.tree.map(np.testing.assert_array_equal, restored["diffae"],
               jax.tree.map(np.asarray, params))
