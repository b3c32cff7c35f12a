"""The FID Inception in Flax: its input resize and pools against PyTorch's
ops, its size, and the pytorch-fid weight names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import convert
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
