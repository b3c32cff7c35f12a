"""The latent DDIM: the official MLPSkipNet's parameters, keys and function,
z-scoring, the sampler, determinism and sharding, and the two programs."""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import api, convert, diffusion, errors, evaluate, latent, sample, train_latent
from cldis_jax.metrics import generation
from cldis_jax.models.latent_net import LatentNet
from conftest import DIFFAE_KEYS, run_json_script
import torch_reference

OFFICIAL = LatentNet(channels=512)  # latent_mlp_2048_norm_10layers


def _official_keys() -> dict[str, tuple[int, ...]]:
  keys = {}
  for line in (DIFFAE_KEYS / "keys_latent_mlp.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, shape = line.split(" ", 1)
      keys[name[len(convert.LATENT_PREFIX):]] = tuple(
          int(s) for s in shape.strip("()").split(",") if s.strip())
  return keys


def _params(net, seed=0):
  return net.init(jax.random.key(seed), jnp.zeros((1, net.channels)),
                  jnp.zeros((1,), jnp.int32))["params"]


def test_the_official_preset_has_every_official_key_and_its_parameter_count():
  template = jax.eval_shape(lambda: _params(OFFICIAL))
  expected = convert.expected_keys(template, convert.latent_torch_key)
  official = _official_keys()
  aliases = {k for k in official if ".cond_layers.1." in k}
  assert expected == {k: v for k, v in official.items() if k not in aliases}
  assert {k.replace(".cond_layers.1.", ".linear_emb.") for k in aliases} <= set(expected)
  # Each tensor once (the aliases are the same tensor): 54,109,696 parameters.
  count = sum(math.prod(s) for k, s in official.items() if k not in aliases)
  assert sum(x.size for x in jax.tree.leaves(template)) == count == 54_109_696


def test_latent_weights_round_trip_through_the_official_state_dict():
  net = LatentNet(channels=8, hidden_channels=16, num_layers=4, time_embed_channels=8)
  params = _params(net)
  state_dict = convert.latent_to_torch(params)
  assert state_dict["layers.1.cond_layers.1.weight"] is state_dict["layers.1.linear_emb.weight"]
  back = convert.latent_from_torch(state_dict, params)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))
  state_dict["layers.1.cond_layers.1.bias"] = state_dict["layers.1.cond_layers.1.bias"] + 1
  with pytest.raises(convert.CheckpointMismatchError, match="layers.1.cond_layers.1.bias "
                     "differs from layers.1.linear_emb.bias"):
    convert.latent_from_torch(state_dict, params)
  del state_dict["layers.3.linear.bias"]
  with pytest.raises(convert.CheckpointMismatchError, match=r"missing key\(s\): layers.3.linear"):
    convert.from_torch(state_dict, params, convert.latent_torch_key)


def test_a_lightning_checkpoint_gives_the_ema_latent_net_and_its_code_moments():
  net = LatentNet(channels=8, hidden_channels=16, num_layers=3, time_embed_channels=8)
  inner = convert.latent_to_torch(_params(net))
  raw = {"state_dict": {**{f"ema_model.latent_net.{k}": v for k, v in inner.items()},
                        **{f"model.latent_net.{k}": 0 * v for k, v in inner.items()},
                        "ema_model.encoder.out.3.weight": np.zeros((2, 2, 1, 1)),
                        "conds_mean": np.ones((1, 8)), "conds_std": 2 * np.ones((1, 8))}}
  weights, stats = convert.latent_state_dict(raw)
  assert weights.keys() == inner.keys()
  np.testing.assert_array_equal(weights["layers.0.linear.weight"], inner["layers.0.linear.weight"])
  np.testing.assert_array_equal(stats["conds_std"], 2 * np.ones(8))


def test_outputs_match_the_official_computation_on_the_same_weights():
  torch = pytest.importorskip("torch")
  net = LatentNet(channels=32, hidden_channels=64, num_layers=5, time_embed_channels=16)
  params = jax.tree.map(lambda a: a + 0.1 * np.random.default_rng(0).standard_normal(a.shape),
                        _params(net))  # LayerNorm scale/bias away from 1/0
  reference = torch_reference.mlp_skip_net(torch, 32, 64, 5, 16)
  reference.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                             for k, v in convert.latent_to_torch(params).items()})
  x = np.random.default_rng(1).standard_normal((6, 32)).astype(np.float32)
  t = np.array([0, 1, 10, 250, 500, 999], np.int32)
  with torch.no_grad():
    want = reference(torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))).numpy()
  got = np.asarray(net.apply({"params": params}, x, t))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_latent_sampler_equals_the_official_ddim_loop_on_the_same_weights(test_config):
  torch = pytest.importorskip("torch")
  net = LatentNet(channels=32, hidden_channels=64, num_layers=5, time_embed_channels=16)
  params = _params(net, seed=3)
  reference = torch_reference.mlp_skip_net(torch, 32, 64, 5, 16)
  reference.load_state_dict({k: torch.from_numpy(np.array(v, np.float32))
                             for k, v in convert.latent_to_torch(params).items()})
  noise = np.random.default_rng(2).standard_normal((5, 32)).astype(np.float32)
  want = torch_reference.ddim_sample(torch, reference, torch.from_numpy(noise),
                                     torch_reference.constant_alphas_cumprod(0.008),
                                     np.arange(0, 1000, 100)[::-1]).numpy()  # Diff-AE's ddim10
  got = latent.sample_codes(net, latent.process(test_config, 10), params, 0.0, 1.0, noise)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_z_scoring_round_trips_with_the_unbiased_std():
  codes = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
  mean, std = latent.code_moments(codes)
  np.testing.assert_allclose(std, codes.std(0, ddof=1), rtol=1e-5)
  z = latent.normalise(codes, mean, std)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(latent.unnormalise(z, mean, std), codes, rtol=1e-5, atol=1e-5)


def test_a_net_predicting_no_noise_samples_the_scaled_noise_and_zero_noise_gives_the_mean(
    test_config):
  net = LatentNet(channels=6, hidden_channels=8, num_layers=2, time_embed_channels=8)
  params = jax.tree.map(jnp.zeros_like, _params(net))  # eps_theta = 0 everywhere
  proc = latent.process(test_config, 10)
  mean, std = np.arange(6, dtype=np.float32), np.full(6, 2.0, np.float32)
  noise = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
  z = latent.sample_codes(net, proc, params, mean, std, noise)
  # With eps = 0, DDIM rescales x_T by 1 / sqrt(abar) of its first step.
  expected = noise / np.sqrt(proc.alphas_cumprod[-1]) * std + mean
  np.testing.assert_allclose(z, expected, rtol=1e-5)
  np.testing.assert_allclose(latent.sample_codes(net, proc, params, mean, std, 0 * noise),
                             np.broadcast_to(mean, (3, 6)))


def test_a_sample_setting_that_cannot_run_is_one_line(test_config):
  config = test_config.copy_and_resolve_references()
  config.sample.latent_steps = 7
  with pytest.raises(errors.ConfigError, match="sample.latent_steps = 7 does not divide the "
                     "1000 timesteps"):
    latent.check(config)
  config.sample.latent_steps, config.latent.loss = 10, "huber"
  with pytest.raises(errors.ConfigError, match="latent.loss = 'huber'; valid: l1, mse"):
    latent.check(config)


def test_train_latent_writes_codes_checkpoints_samples_and_metrics(latent_workdir, test_config):
  workdir, metrics = latent_workdir
  out = os.path.join(workdir, "latent")
  assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["3", "6"]
  assert metrics["status"] == "completed" and metrics["step"] == 6 and metrics["model_step"] == 4
  assert metrics["num_codes"] == test_config.latent.num_images
  assert json.load(open(os.path.join(out, "metrics.json"))) == metrics
  assert os.path.exists(metrics["samples"])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))
  with np.load(os.path.join(out, "codes.npz")) as codes:
    assert codes["z_sem"].shape == (test_config.latent.num_images, 32)


def test_resumed_latent_training_equals_uninterrupted(latent_workdir, test_config, tmp_path):
  workdir, _ = latent_workdir
  resumed = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, "latent", "checkpoints", "6"))
  train_latent.run(test_config, resumed)  # from step 3, the cached codes
  a, b = latent.restore(workdir)[2], latent.restore(resumed)[2]
  for x, y in zip(jax.tree.leaves(a.ema_params), jax.tree.leaves(b.ema_params)):
    np.testing.assert_array_equal(x, y)
  changed = test_config.copy_and_resolve_references()
  changed.latent.learning_rate = 1e-3
  changed.latent.num_steps = 9
  with pytest.raises(errors.WorkdirError, match="latent.learning_rate: 0.0001 -> 0.001"):
    train_latent.run(changed, resumed)


@pytest.mark.slow
def test_a_non_finite_latent_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    trained_workdir, test_config, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_workdir, workdir)
  config = test_config.copy_and_resolve_references()
  config.latent.update(learning_rate=1e30, checkpoint_every=1)  # weights ~1e30 after step 1
  with pytest.raises(FloatingPointError, match=r"at step 1: .*loss=(nan|inf)"):
    train_latent.run(config, workdir)
  state = latent.restore(workdir)[2]
  assert int(state.step) == 1
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_samples_are_the_same_per_seed_whatever_the_batch(latent_workdir, test_config):
  workdir, _ = latent_workdir
  model = api.load(workdir, test_config)
  a = model.sample_all(5, seed=3)
  model._latent[0].sample.batch_size = 2  # pylint: disable=protected-access
  b = model.sample_all(5, seed=3)
  np.testing.assert_allclose(a["images"], b["images"], atol=1e-5)
  assert not np.allclose(a["images"], model.sample(5, seed=4), atol=1e-3)
  # The images are the image DDIM's decoding of the sampled codes from x_T.
  again = latent.decode_codes(model.models, model.process(test_config.sample.image_steps),
                              model.params, a["z_sem"], a["x_T"])
  np.testing.assert_allclose(again, a["images"], atol=1e-4)
  moved = model.sample_traversals(2, [-2.0, 0.0, 2.0], kind="mu_s", seed=3)
  assert moved.shape == (2, test_config.model.latent_dim, 3, 16, 16, 3)
  np.testing.assert_allclose(moved[:, :, 1], np.repeat(a["images"][:2, None], 4, 1), atol=1e-4)
  with pytest.raises(api.InputError, match="n = 0"):
    model.sample(0)


_SHARDED = """
import json, sys
import numpy as np
from cldis_jax import api, config_lib
config = config_lib.load_config("configs/test.py")
model = api.load(sys.argv[1], config)
print(json.dumps(model.sample(5, seed=1).tolist()))
"""


@pytest.mark.slow
def test_sharded_sampling_equals_one_device(latent_workdir):
  workdir, _ = latent_workdir
  one = np.asarray(run_json_script(_SHARDED, workdir, devices=1))
  two = np.asarray(run_json_script(_SHARDED, workdir, devices=2))
  np.testing.assert_allclose(one, two, atol=1e-5)


def test_sample_mode_writes_the_grid_the_arrays_and_the_edits(latent_workdir, test_config):
  workdir, _ = latent_workdir
  summary = sample.run(test_config, workdir)
  names = [os.path.basename(f) for f in summary["files"]]
  assert names == ["samples.png", "samples.npz", "edit_mu_s.png"]
  with np.load(summary["files"][1]) as arrays:
    assert arrays["images"].shape == (6, 16, 16, 3) and arrays["images"].dtype == np.uint8
    assert arrays["z_sem"].shape == (6, 32) and arrays["x_T"].shape == (6, 16, 16, 3)
  stored = json.load(open(os.path.join(workdir, "sample", "4", "sample.json")))
  assert stored["latent_step"] == 6 and stored["seed"] == 0 and stored["image_steps"] == 4


def test_sampling_without_a_latent_ddim_says_what_to_run(trained_workdir, test_config):
  with pytest.raises(errors.NoCheckpointError, match="run --mode=train_latent"):
    api.load(trained_workdir, test_config).sample(2)
  assert diffusion.process(test_config.latent).alphas_cumprod[-1] == pytest.approx(
      0.992 ** 1000, rel=1e-9)


def test_frechet_distance_is_zero_on_itself_and_the_closed_form_between_gaussians():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2000, 5)) @ rng.standard_normal((5, 5))
  stats = generation.gaussian_stats(x)
  assert abs(generation.frechet_distance(stats, stats)) < 1e-6
  shift = np.arange(5.0)
  shifted = generation.gaussian_stats(x + shift)  # same covariance: ||shift||^2
  assert generation.frechet_distance(stats, shifted) == pytest.approx(shift @ shift, rel=1e-6)
  # Diagonal covariances: sum of (sqrt(s1) - sqrt(s2))^2 on top of the means.
  a = (np.zeros(3), np.diag([1.0, 4.0, 9.0]))
  b = (np.ones(3), np.diag([4.0, 4.0, 1.0]))
  assert generation.frechet_distance(a, b) == pytest.approx(3 + 1 + 0 + 4, rel=1e-9)
  assert generation.total_variation([0, 0, 1, 1], [0, 0, 0, 0], 3) == pytest.approx(0.5)


def test_precision_and_recall_are_one_on_the_same_set_zero_apart_and_dropping_a_mode_halves_recall():
  rng = np.random.default_rng(0)
  real = np.concatenate([rng.standard_normal((500, 2)), rng.standard_normal((500, 2)) + 20])
  assert generation.precision_recall(real, real, batch=7) == {"precision": 1.0, "recall": 1.0}
  assert generation.precision_recall(real, real + 100) == {"precision": 0.0, "recall": 0.0}
  one_mode = generation.precision_recall(real, rng.standard_normal((500, 2)))
  assert one_mode["precision"] > 0.9 and 0.4 < one_mode["recall"] < 0.52, one_mode
  with pytest.raises(ValueError, match="needs more than 3 points per set"):
    generation.precision_recall(real, real[:3])


def test_the_generation_column_reads_samples_with_the_oracle(latent_workdir, test_config,
                                                              trained_workdir, tmp_path):
  workdir, _ = latent_workdir
  config = test_config.copy_and_resolve_references()
  config.evaluate.metrics = ("generation",)
  column = evaluate.run(config, workdir)["results"]["generation"]
  assert column["images"] == config.sample.quality_images
  factors = set(column["oracle_accuracy"])
  for name in ("samples", "reconstructions"):
    assert set(column[name]["total_variation"]) == factors
    assert 0 <= column[name]["max_total_variation"] <= 1 and column[name]["frechet"] >= 0
    assert 0 <= column[name]["precision"] <= 1 and 0 <= column[name]["recall"] <= 1
  assert column["frechet_ratio"] == pytest.approx(
      column["samples"]["frechet"] / column["reconstructions"]["frechet"])
  plain = str(tmp_path / "plain")
  shutil.copytree(trained_workdir, plain)
  skipped = evaluate.run(config, plain)["skipped"]
  assert "run --mode=train_latent" in skipped["generation"]


def test_convert_imports_the_latent_ddim_of_an_official_checkpoint(tmp_path, tiny_params,
                                                                    test_config):
  torch = pytest.importorskip("torch")
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from conftest import REPO, config_path, subprocess_env  # pylint: disable=g-import-not-at-top
  net = latent.build(test_config, 32)
  params = _params(net, seed=3)
  state = {f"ema_model.{k}": v for k, v in convert.to_torch(tiny_params["diffae"]).items()}
  state.update({f"ema_model.latent_net.{k}": v
                for k, v in convert.latent_to_torch(params).items()})
  state.update(conds_mean=np.full((1, 32), 0.5, np.float32), conds_std=np.full((1, 32), 2.0,
                                                                               np.float32))
  path, out = str(tmp_path / "last.ckpt"), str(tmp_path / "converted")
  torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in state.items()}}, path)
  result = subprocess.run([sys.executable, "-m", "cldis_jax.convert", "--config",
                           config_path("test.py"), "--checkpoint", path, "--output", out],
                          capture_output=True, text=True, cwd=REPO, env=subprocess_env(),
                          check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "and the latent DDIM" in result.stdout
  restored = ocp.StandardCheckpointer().restore(out)
  jax.tree.map(np.testing.assert_array_equal, restored["latent"]["params"],
               jax.tree.map(np.asarray, params))
  np.testing.assert_array_equal(restored["latent"]["std"], np.full(32, 2.0))
