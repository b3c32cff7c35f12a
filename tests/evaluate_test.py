"""`--mode=evaluate` and the training hook on a configs/test.py checkpoint."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from cldis_jax import checkpoint, codes, config_lib, eval_report, evaluate, train
from cldis_jax.data import shapes3d
from cldis_jax.data.source import FactorSpace, Source
from conftest import config_path, run_json_script


class HueGrid(Source):
  """A small real ground-truth source: Shapes3D scenes where only the floor
  and object hues vary (everything else fixed), with two binary attributes."""
  name = "hue_grid"
  factor_space = FactorSpace(("floor_hue", "object_hue"), (10, 10))

  def __init__(self, resolution=16):
    self.image_shape = (resolution, resolution, 3)
    self.layers = shapes3d.render_layers(np.array([[3, 0, 7]]), resolution)

  def __len__(self):
    return 100

  def __getitem__(self, index):
    f = self.factor_space.factors_of(index)
    image = shapes3d.compose(self.layers, np.array([f[0], 0, f[1], 3, 0, 7]))[0]
    return {"image": image, "factors": f, "attributes": (f >= 5).astype(np.int8)}


def _config(**evaluate):
  config = config_lib.load_config(config_path("test.py"))
  config.train.update(num_steps=6, log_every=3, checkpoint_every=3)
  config.samples.every = 0
  config.evaluate.update(every=3, **evaluate)
  return config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("eval"))
  config = _config()
  metrics = train.train_and_evaluate(config, workdir)
  return dict(workdir=workdir, config=config, metrics=metrics)


def _numbers(tree):
  if isinstance(tree, dict):
    return [x for v in tree.values() for x in _numbers(v)]
  if isinstance(tree, list):
    return [x for v in tree for x in _numbers(v)]
  return [tree] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


@pytest.mark.slow
def test_training_evaluates_periodically_with_every_field_filled(run):
  workdir = run["workdir"]
  assert sorted(os.listdir(os.path.join(workdir, "eval"))) == ["3", "6"]
  summary = json.load(open(os.path.join(workdir, "eval", "6", "metrics.json")))
  assert summary["step"] == 6 and summary["factors"] == list(shapes3d.FACTORS.names)
  assert summary["skipped"] == {"tad": "procedural/shapes3d has no binary attributes"}
  assert list(summary["results"]) == list(codes.REPRESENTATIONS) + ["autoencoding"]
  for rep in codes.REPRESENTATIONS:
    results = summary["results"][rep]
    assert sorted(results) == sorted(evaluate.SUPERVISED + evaluate.TRAVERSAL), rep
  for name, results in summary["results"].items():
    values = _numbers(results)
    assert values and all(math.isfinite(v) for v in values), name
  assert {"eval_accuracy", "train_accuracy", "num_active"} <= set(
      summary["results"]["vae_mu"]["factor_vae"])
  assert {"disentanglement", "completeness", "informativeness_test"} <= set(
      summary["results"]["mu_s"]["dci"])
  ctd = summary["results"]["mu_s"]["ctd"]
  assert len(ctd["per_direction"]) == run["config"].model.latent_dim
  with Image.open(ctd["grid"]) as im:  # 4 directions x 5 frames of 16 px, 4x enlarged
    assert im.size == ((5 * 18 + 2) * 4, (4 * 18 + 2) * 4)
  table = open(os.path.join(workdir, "eval", "6", "metrics.txt")).read()
  assert "FactorVAE" in table and "DCI-D" in table and "z_sem_pca" in table
  phases = {"encode", "total", "probe", "dci on mu_s", "mig on vae_mu", "traversals of z_sem_pca"}
  assert phases <= set(summary["seconds"]) and min(summary["seconds"].values()) >= 0
  assert run["metrics"]["evaluation"]["step"] == 6
  assert "mu_s/MIG" in run["metrics"]["evaluation"]


@pytest.mark.slow
def test_evaluate_mode_reproduces_the_training_hook_numbers(run):
  workdir = run["workdir"]
  hooked = json.load(open(os.path.join(workdir, "eval", "6", "metrics.json")))
  os.remove(os.path.join(workdir, "eval", "6", "metrics.json"))
  config = config_lib.load_config(config_path("test.py"))  # the command line's config
  config.train.num_steps = 6
  table = eval_report.format_table(evaluate.run(config, workdir))  # what --mode=evaluate prints
  assert "FactorVAE" in table and "mu_s" in table
  again = json.load(open(os.path.join(workdir, "eval", "6", "metrics.json")))
  assert again["results"] == hooked["results"]


def test_evaluate_without_a_checkpoint_says_how_to_get_one(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*train first"):
    evaluate.run(_config(), str(tmp_path))


def test_lazy_encoding_equals_encoding_everything_and_tad_runs(trained_workdir, tmp_path):
  config = _config(reference_images=20, num_train=100, num_test=50,
                   num_variance_estimate=100, metrics=("factor_vae", "mig", "tad"))
  config.evaluate.tad.update(num_images=100, variants=("grid11", "grid101", "exact"))
  step, models, params = checkpoint.restore_ema(config, trained_workdir)
  lazy = evaluate.evaluate_params(config, models, params, HueGrid(), str(tmp_path / "a"), step)
  config.evaluate.encode_all = True
  full = evaluate.evaluate_params(config, models, params, HueGrid(), str(tmp_path / "b"), step)
  assert full["images_encoded"] == 100
  assert lazy["results"] == full["results"]
  tad = lazy["results"]["vae_mu"]["tad"]
  assert sorted(tad) == ["exact", "grid101", "grid11"]
  assert tad["exact"]["variant"] == "exact" and tad["exact"]["num_images"] == 100


def test_a_table_of_some_representations_encodes_only_their_network(trained_workdir):
  """vae_mu alone (the VAE-alone baseline) needs no Diff-AE pass, and gives
  the same codes as the table of every representation."""
  _, models, params = checkpoint.restore_ema(_config(), trained_workdir)
  source, rows = HueGrid(), np.arange(0, 100, 7)
  full = codes.CodeTable(source, models, params, reference_images=20)
  vae = codes.CodeTable(source, models, dict(params, diffae=None, head=None),
                        reference_images=20, representations=("vae_mu",))
  np.testing.assert_array_equal(vae.representation("vae_mu")(rows),
                                full.representation("vae_mu")(rows))
  with pytest.raises(ValueError, match="'mu_s' was not encoded"):
    vae.representation("mu_s")


def test_unknown_metric_names_the_valid_ones(tmp_path):
  config = _config(metrics=("mig", "inception_score"))
  with pytest.raises(ValueError, match=r"unknown \['inception_score'\]; valid: factor_vae"):
    evaluate.evaluate_params(config, None, None, HueGrid(), str(tmp_path), 0)


_CODES_ON_DEVICES = """
import json, sys
import jax, numpy as np
from cldis_jax import codes, config_lib, data, models
config = config_lib.load_config(sys.argv[1])
nets = models.build_models(config.model)
params = models.init_params(nets, jax.random.key(0))
source = data.build_source(config.data, image_size=config.model.image_size,
                           channels=config.model.in_channels)
rows = np.arange(0, 61, 3)
out = {}
for n in (1, 2):
  table = codes.CodeTable(source, nets, params, batch_size=7, reference_images=9,
                          devices=jax.devices()[:n])
  out[n] = {rep: table.representation(rep)(rows) for rep in codes.REPRESENTATIONS}
# float32 rounding only: the per-device batch shape may pick other kernels on some CPUs
print(json.dumps(dict(
    batch=table.batch_size, devices=jax.device_count(),
    equal={rep: bool(np.allclose(out[1][rep], out[2][rep], rtol=1e-5, atol=1e-5))
           for rep in out[1]},
    max_difference={rep: float(np.abs(out[1][rep] - out[2][rep]).max()) for rep in out[1]})))
"""


@pytest.mark.slow
def test_codes_encoded_on_two_devices_equal_one_device_to_rounding():
  result = run_json_script(_CODES_ON_DEVICES, config_path("test.py"), devices=2)
  assert result["devices"] == 2 and result["batch"] == 8  # 7 rounded up to split evenly
  assert all(result["equal"].values()), result
