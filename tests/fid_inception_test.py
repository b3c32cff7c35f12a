"""The FID Inception in Flax: its input resize and pools against PyTorch's
ops, its size, and the pytorch-fid weight names."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import convert
from cldis_jax.metrics import generation
from cldis_jax.models import inception


@pytest.fixture(scope="module")
def template():
  net = inception.FIDInception()
  return jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]


@pytest.mark.parametrize("size", [32, 64, 512])
def test_the_resize_is_pytorchs_bilinear_without_align_corners(size):
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(size).random((2, size, size + 3, 3), dtype=np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                                         mode="bilinear", align_corners=False)
  got = inception.resize_bilinear(jnp.asarray(x))
  np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=1e-5)  # rounding


def test_the_block_pools_are_tensorflows():
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(0).standard_normal((2, 9, 7, 4)).astype(np.float32)
  t = torch.from_numpy(x).permute(0, 3, 1, 2)
  nchw = lambda a: a.permute(0, 2, 3, 1).numpy()
  f = torch.nn.functional
  np.testing.assert_allclose(
      inception.avg_pool_exclude_pad(jnp.asarray(x)),
      nchw(f.avg_pool2d(t, 3, stride=1, padding=1, count_include_pad=False)), atol=1e-6)
  np.testing.assert_allclose(inception.max_pool(jnp.asarray(x), 3, 1, 1),
                             nchw(f.max_pool2d(t, 3, stride=1, padding=1)))
  np.testing.assert_allclose(inception.max_pool(jnp.asarray(x)), nchw(f.max_pool2d(t, 3, stride=2)))


def test_the_network_has_inceptions_94_convolutions_and_pool3_features(template):
  leaves = jax.tree_util.tree_flatten_with_path(template)[0]
  kernels = [p for p, _ in leaves if p[-1].key == "kernel"]
  assert len(kernels) == 94
  affine = sum(x.size for p, x in leaves if p[-1].key not in ("mean", "var"))
  assert affine == 21_785_568  # InceptionV3 without its classifier and auxiliary head
  net = inception.FIDInception()
  out = jax.eval_shape(lambda p: net.apply({"params": p}, jnp.zeros((3, 64, 64, 3))), template)
  assert out.shape == (3, 2048)


def test_pytorch_fid_weights_map_onto_every_leaf(template):
  params = jax.tree.map(lambda s: np.random.default_rng(0).standard_normal(s.shape)
                        .astype(np.float32), template)
  state_dict = convert.to_torch(params, convert.inception_torch_key)
  assert state_dict["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
  assert "Conv2d_1a_3x3.bn.running_var" in state_dict
  state_dict.update({"fc.weight": np.zeros((1008, 2048)), "fc.bias": np.zeros(1008),
                     "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros(())})
  back = convert.inception_from_torch(state_dict, template)
  jax.tree.map(np.testing.assert_array_equal, back, params)


def _pytorch_fid():
  """pytorch-fid's module, with torchvision's Python code imported without
  its package __init__: PyPI's torchvision wheels register compiled ops
  built for the CUDA torch, which fail to load next to a CPU torch build
  (the Inception blocks are plain Python)."""
  import importlib.util, os, sys, types  # pylint: disable=g-import-not-at-top,multiple-imports
  pytest.importorskip("torch")
  spec = importlib.util.find_spec("torchvision")
  if spec is None or importlib.util.find_spec("pytorch_fid") is None:
    pytest.skip("pytorch-fid and torchvision are not installed")
  if "torchvision" not in sys.modules:
    package = types.ModuleType("torchvision")
    package.__path__ = [os.path.dirname(spec.origin)]
    package.__version__ = "0.0"  # pytorch-fid only compares it to pick keyword names
    sys.modules["torchvision"] = package
  from pytorch_fid import fid_score, inception as pfi  # pylint: disable=g-import-not-at-top
  return pfi, fid_score


def _random_fid_network(pfi, torch):
  """pytorch-fid's InceptionV3 (pool3 output, its resize and normalisation)
  with random weights and batch-norm statistics instead of the download."""
  def build():  # fid_inception_v3() without load_state_dict_from_url
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # pylint: disable=protected-access
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
      for name, value in net.state_dict().items():
        if name.endswith("running_var"):
          value.copy_(0.5 + torch.rand(value.shape, generator=gen))
        elif value.dtype.is_floating_point:
          fan_in = value[0].numel() if value.ndim > 1 else 1
          value.copy_(torch.randn(value.shape, generator=gen) / np.sqrt(fan_in))
    return net
  original, pfi.fid_inception_v3 = pfi.fid_inception_v3, build
  try:
    return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  finally:
    pfi.fid_inception_v3 = original


@pytest.mark.slow
def test_features_and_frechet_distance_match_pytorch_fid(template):
  torch = pytest.importorskip("torch")
  pfi, fid_score = _pytorch_fid()
  reference = _random_fid_network(pfi, torch)
  named = {f"{name}.{key}": value.numpy() for name, module in _named_children(reference)
           for key, value in module.state_dict().items()}
  params = convert.inception_from_torch(named, template)
  x = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
  with torch.no_grad():
    want = reference(torch.from_numpy(x).permute(0, 3, 1, 2))[0][:, :, 0, 0].numpy()
  got = np.asarray(inception.FIDInception().apply({"params": params}, jnp.asarray(x)))
  # float32 rounding through 94 convolutions, relative to the features' scale
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()
  rng = np.random.default_rng(1)
  a, b = rng.standard_normal((400, 16)), rng.standard_normal((400, 16)) * 1.3 + 0.2
  mu1, s1 = generation.gaussian_stats(a)
  mu2, s2 = generation.gaussian_stats(b)
  theirs = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
  assert generation.frechet_distance((mu1, s1), (mu2, s2)) == pytest.approx(theirs, rel=1e-6)


def _named_children(reference):
  """(torchvision name, module) of every named Inception block inside
  pytorch-fid's blocks (its Sequential containers drop the names)."""
  names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", None, "Conv2d_3b_1x1",
           "Conv2d_4a_3x3", None, "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
           "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", None]
  modules = [m for block in reference.blocks for m in block]
  return [(n, m) for n, m in zip(names, modules, strict=True) if n is not None]


def _random_weights_file(path, template) -> str:
  """An .npz of pytorch-fid's keys with random values (the real file cannot be
  downloaded here): what `evaluate.fid.weights` takes."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(
      max(np.prod(s.shape[:-1]), 1))).astype(np.float32), template)
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: np.abs(v) + 0.5 if p[-1].key == "var" else v, params)
  np.savez(path, **convert.to_torch(params, convert.inception_torch_key))
  return str(path)


def test_fid_is_skipped_in_one_line_without_weights_and_a_wrong_file_is_named(
    test_config, tmp_path):
  from cldis_jax import fid  # pylint: disable=g-import-not-at-top
  f = test_config.copy_and_resolve_references().evaluate.fid
  assert "evaluate.fid.weights is not set" in fid.unavailable(f)
  f.weights = str(tmp_path / "nowhere.pth")
  assert "does not exist" in fid.unavailable(f)
  bad = tmp_path / "bad.npz"
  np.savez(bad, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.float32)})
  with pytest.raises(fid.InceptionWeightsError, match=r"bad.npz: not pytorch-fid's Inception "
                     r"weights \(.*missing key"):
    fid.load_inception(str(bad))


@pytest.mark.slow
def test_evaluate_reports_sampling_and_autoencoding_fid_and_keeps_the_reference(
    template, latent_workdir, test_config, tmp_path):
  from cldis_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = test_config.copy_and_resolve_references()
  config.evaluate.metrics = ("fid",)
  config.evaluate.fid.update(weights=_random_weights_file(tmp_path / "w.npz", template),
                             num_images=4, batch_size=4, reference="random",
                             precision_recall_images=4)
  workdir = str(tmp_path / "run")
  shutil.copytree(latent_workdir[0], workdir)
  column = evaluate.run(config, workdir)["results"]["fid"]
  assert column["sampling"]["fid"] > 0 and column["autoencoding"]["fid"] > 0
  for scores in (column["sampling"], column["autoencoding"]):
    assert 0 <= scores["precision"] <= 1 and 0 <= scores["recall"] <= 1
  assert column["protocol"]["precision_recall"] == {"images": 4, "k": 3, "features": "pool3"}
  assert column["protocol"]["num_images"] == 4 and column["protocol"]["reference"] == "random"
  cache = os.path.join(workdir, "eval", "fid_reference")
  (cached,) = os.listdir(cache)
  with np.load(os.path.join(cache, cached)) as stats:  # pool3 moments and features
    assert stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048, 2048)
    assert stats["features"].shape == (4, 2048)
    np.testing.assert_array_equal(stats["sigma"], stats["sigma"].T)
    assert np.trace(stats["sigma"]) > 0
