"""Diff-AE backbone: official sizes, the spec's numerics, zero init, gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cldis_jax import config_lib, models
from cldis_jax.models import heads, layers
from cldis_jax.models import unet as unet_lib
from conftest import config_path

OFFICIAL_COUNTS = {  # phizaz/diffae templates: UNet, encoder
    64: (71_518_723, 19_320_512),
    128: (103_871_619, 24_673_536),
    256: (138_341_891, 30_150_400),
}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_ffhq_parameter_counts_equal_official(resolution):
  config = config_lib.load_config(config_path(f"ffhq.py:{resolution}"))
  params = models.abstract_params(models.build_models(config.model))["diffae"]
  assert (_count(params["unet"]), _count(params["encoder"])) == OFFICIAL_COUNTS[resolution]


def _inputs(models_, batch=2, seed=0):
  d = models_.diffae
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  x0 = jax.random.uniform(k1, (batch, d.image_size, d.image_size, 3), minval=-1, maxval=1)
  x_t = jax.random.normal(k2, x0.shape)
  t = jax.random.randint(k3, (batch,), 0, 1000)
  return x0, x_t, t


def test_fresh_denoiser_outputs_exactly_zero(tiny_models, tiny_params):
  x0, x_t, t = _inputs(tiny_models)
  eps = jax.jit(tiny_models.diffae.apply)({"params": tiny_params["diffae"]}, x0, x_t, t)
  assert eps.shape == x_t.shape and eps.dtype == jnp.float32
  assert jnp.all(eps == 0.0)


@pytest.mark.slow
def test_encode_and_denoise_shapes(tiny_models, tiny_params, test_config):
  x0, x_t, t = _inputs(tiny_models, batch=3)
  variables = {"params": tiny_params["diffae"]}
  z = tiny_models.diffae.apply(variables, x0, method="encode")
  assert z.shape == (3, test_config.model.diffae.z_dim)
  eps = tiny_models.diffae.apply(variables, x_t, t, z, method="denoise")
  assert eps.shape == x_t.shape


@pytest.mark.slow
def test_z_sem_changes_output_once_weights_are_nonzero(tiny_models, random_diffae_params):
  x0, x_t, t = _inputs(tiny_models)
  variables = {"params": random_diffae_params}
  denoise = jax.jit(lambda z: tiny_models.diffae.apply(variables, x_t, t, z, method="denoise"))
  z = tiny_models.diffae.apply(variables, x0, method="encode")
  eps_a, eps_b = denoise(z), denoise(z + 0.5)
  assert float(jnp.abs(eps_a).max()) > 0
  assert float(jnp.abs(eps_a - eps_b).max()) > 1e-3


@pytest.mark.slow
def test_every_parameter_gets_a_gradient_from_the_eps_loss(tiny_models, random_diffae_params):
  x0, x_t, t = _inputs(tiny_models, batch=4)
  eps = jax.random.normal(jax.random.key(3), x0.shape)

  def loss(params):
    pred = tiny_models.diffae.apply({"params": params}, x0, x_t, t)
    return jnp.mean((pred - eps) ** 2)

  grads = jax.jit(jax.grad(loss))(random_diffae_params)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(p) for p, g in flat if not jnp.any(g != 0)]
  assert not dead, f"parameters without gradient: {dead}"
  assert any("encoder" in jax.tree_util.keystr(p) for p, _ in flat)


@pytest.mark.slow
def test_bfloat16_compute_stays_close_to_float32(test_config, random_diffae_params):
  cfg = test_config.model.copy_and_resolve_references()
  cfg.dtype = "bfloat16"
  f32 = models.build_models(test_config.model).diffae
  bf16 = models.build_models(cfg).diffae
  x0, x_t, t = _inputs(models.build_models(cfg))
  variables = {"params": random_diffae_params}
  ref = f32.apply(variables, x0, x_t, t)
  out = jax.jit(bf16.apply)(variables, x0, x_t, t)
  assert out.dtype == jnp.float32
  rel = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
  assert rel < 0.05, rel


def test_dropout_only_in_training_and_driven_by_its_rng(tiny_models, random_diffae_params):
  x0, x_t, t = _inputs(tiny_models)
  variables = {"params": random_diffae_params}
  run = jax.jit(lambda key: tiny_models.diffae.apply(
      variables, x0, x_t, t, train=True, rngs={"dropout": key}))
  a, b, a2 = run(jax.random.key(1)), run(jax.random.key(2)), run(jax.random.key(1))
  assert jnp.array_equal(a, a2) and not jnp.allclose(a, b)
  assert not jnp.allclose(a, tiny_models.diffae.apply(variables, x0, x_t, t))


class _SkiplessUNet(unet_lib.UNet):
  """The restatement of skip dropout at rate 1: every skip is zeros in training."""

  def _dropped(self, skip, train):
    return jnp.zeros_like(skip) if train else skip


def test_skip_dropout_zeroes_whole_skips_per_image_in_training_only(tiny_models,
                                                                    random_diffae_params):
  x0, x_t, t = _inputs(tiny_models, batch=8)
  x_t = jnp.broadcast_to(x_t[:1], x_t.shape)  # one input, eight draws of the mask
  t = jnp.full_like(t, 500)
  z = jax.random.normal(jax.random.key(3), (8, tiny_models.diffae.z_dim))
  unet = tiny_models.diffae.clone(dropout=0.0).bind({"params": random_diffae_params}).unet
  fields = {f: getattr(unet, f) for f in ("image_size", "base_channels", "channel_mult",
                                          "num_res_blocks", "attn_resolutions", "num_heads",
                                          "embed_dim", "out_channels")}
  variables = {"params": random_diffae_params["unet"]}
  run = lambda cls, rate, train: cls(dropout=0.0, skip_dropout=rate, **fields).apply(
      variables, x_t, t, z, train=train, rngs={"dropout": jax.random.key(4)})
  plain = run(unet_lib.UNet, 0.0, True)
  # The parameters and the decoder at inference are the official model's.
  np.testing.assert_array_equal(run(unet_lib.UNet, 0.5, False), plain)
  # Rate -> 1: the decoder half sees no skip at all.
  np.testing.assert_allclose(run(unet_lib.UNet, 1 - 1e-7, True), run(_SkiplessUNet, 0.0, True),
                             atol=1e-6)
  # Rate 0.5: each image draws its own mask, so the eight copies differ.
  half = np.asarray(run(unet_lib.UNet, 0.5, True)).reshape(8, -1)
  assert len({tuple(np.round(row[:16], 5)) for row in half}) > 2
  assert not np.allclose(half, np.asarray(plain).reshape(8, -1))


def test_denoiser_traces_once_per_shape(tiny_models, tiny_params):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def denoise(params, x_t, t, z):
    return tiny_models.diffae.apply({"params": params}, x_t, t, z, method="denoise")

  for seed in range(3):
    x0, x_t, t = _inputs(tiny_models, seed=seed)
    denoise(tiny_params["diffae"], x_t, t, jnp.zeros((2, tiny_models.diffae.z_dim)))


def test_wrong_image_size_is_a_clear_error(tiny_models, tiny_params):
  x = jnp.zeros((1, 32, 32, 3))
  with pytest.raises(ValueError, match="built for 16x16"):
    tiny_models.diffae.apply({"params": tiny_params["diffae"]}, x, method="encode")


def test_unknown_model_key_names_it_and_the_closest(test_config):
  cfg = test_config.model.copy_and_resolve_references()
  cfg.diffae.base_chanels = 8
  with pytest.raises(ValueError, match=r"model\.diffae\.base_chanels.*base_channels"):
    models.build_models(cfg)


# --- the spec's layer numerics, checked against plain numpy -----------------------

def test_timestep_embedding_is_cos_first():
  t = jnp.array([0, 7, 999])
  emb = np.asarray(layers.timestep_embedding(t, 8))
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
  args = np.array([0, 7, 999])[:, None] * freqs
  np.testing.assert_allclose(emb, np.concatenate([np.cos(args), np.sin(args)], 1),
                             rtol=1e-5, atol=1e-5)


def _np_group_norm(x, scale, bias, groups, eps=1e-5):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


def _np_conv3x3(x, kernel, bias):
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1:3]
  out = sum(xp[:, i:i + h, j:j + w] @ kernel[i, j] for i in range(3) for j in range(3))
  return out + bias


def _silu(x):
  return x / (1 + np.exp(-x))


@pytest.mark.parametrize("cond_shift", [False, True])  # True: FiLM, + z_shift after the scale
def test_res_block_matches_the_spec_formula(cond_shift):
  block = layers.ResBlock(16, dropout=0.0, cond_shift=cond_shift)
  x = np.random.RandomState(0).randn(2, 4, 4, 8).astype(np.float32)
  emb = np.random.RandomState(1).randn(2, 12).astype(np.float32)
  z = np.random.RandomState(2).randn(2, 10).astype(np.float32)
  params = block.init(jax.random.key(0), x, emb, z)["params"]
  leaves, treedef = jax.tree.flatten(params)  # randomise the zero-initialised conv too
  params = jax.tree.unflatten(treedef, [
      np.random.RandomState(i).randn(*l.shape).astype(np.float32) * 0.3
      for i, l in enumerate(leaves)])
  out = np.asarray(block.apply({"params": params}, x, emb, z))

  p = jax.tree.map(np.asarray, params)
  h = _silu(_np_group_norm(x, p["in_norm"]["scale"], p["in_norm"]["bias"], 8))
  h = _np_conv3x3(h, p["in_conv"]["kernel"], p["in_conv"]["bias"])
  ts_tb = _silu(emb) @ p["emb_proj"]["kernel"] + p["emb_proj"]["bias"]
  t_scale, t_shift = ts_tb[:, None, None, :16], ts_tb[:, None, None, 16:]
  zs_zb = (_silu(z) @ p["cond_proj"]["kernel"] + p["cond_proj"]["bias"])[:, None, None]
  z_scale, z_shift = (zs_zb[..., :16], zs_zb[..., 16:]) if cond_shift else (zs_zb, 0.0)
  h = _np_group_norm(h, p["out_norm"]["scale"], p["out_norm"]["bias"], 16)
  h = h * (1 + t_scale) + t_shift
  h = h * (1 + z_scale) + z_shift
  h = _np_conv3x3(_silu(h), p["out_conv"]["kernel"], p["out_conv"]["bias"])
  skip = x @ p["skip"]["kernel"][0, 0] + p["skip"]["bias"]
  np.testing.assert_allclose(out, skip + h, rtol=1e-4, atol=1e-4)


def test_attention_matches_the_spec_formula():
  block = layers.AttentionBlock(num_heads=1)
  x = np.random.RandomState(0).randn(2, 4, 4, 8).astype(np.float32)
  params = block.init(jax.random.key(0), x)["params"]
  params = jax.tree.map(
      lambda l: np.random.RandomState(l.size).randn(*l.shape).astype(np.float32) * 0.3,
      params)
  out = np.asarray(block.apply({"params": params}, x))

  p = params
  h = _np_group_norm(x, p["norm"]["scale"], p["norm"]["bias"], 8).reshape(2, 16, 8)
  qkv = h @ p["qkv"]["kernel"] + p["qkv"]["bias"]
  q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16:]
  logits = np.einsum("btc,bsc->bts", q, k) / np.sqrt(8)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  a = np.einsum("bts,bsc->btc", w, v) @ p["proj_out"]["kernel"] + p["proj_out"]["bias"]
  np.testing.assert_allclose(out, x + a.reshape(x.shape), rtol=1e-4, atol=1e-4)


def test_resampling_blocks_change_resolution_and_keep_width():
  x = jnp.ones((1, 8, 8, 4))
  emb, z = jnp.ones((1, 6)), jnp.ones((1, 5))
  for kw, size in ((dict(down=True), 4), (dict(up=True), 16)):
    block = layers.ResBlock(4, **kw)
    out, _ = block.init_with_output(jax.random.key(0), x, emb, z)
    assert out.shape == (1, size, size, 4)


@pytest.fixture(scope="module")
def mu_s_conditioned(test_config, tiny_params, random_diffae_params):
  """configs/test.py with model.condition = "mu_s": models, and parameters with
  a non-zero denoiser (the head from a fresh init of this layout)."""
  config = test_config.copy_and_resolve_references()
  config.model.condition = "mu_s"
  nets = models.build_models(config.model)
  params = models.init_params(nets, jax.random.key(5))
  return nets, dict(params, diffae=random_diffae_params)


@pytest.mark.slow
def test_mu_s_condition_adds_only_the_heads_expand_map(test_config, tiny_models, tiny_params,
                                                       mu_s_conditioned):
  nets, params = mu_s_conditioned
  d, z = test_config.model.latent_dim, test_config.model.diffae.z_dim
  assert set(tiny_params["head"]) == {"proj"}  # switched off: the layout is unchanged
  assert _count(tiny_params["head"]) == 2 * d * (z + 1)
  assert set(params["head"]) == {"proj", "expand"}
  assert params["head"]["expand"]["kernel"].shape == (d, z)
  assert _count(params["diffae"]) == _count(tiny_params["diffae"])  # the UNet is the same
  x0, _, _ = _inputs(tiny_models, batch=3)
  z_sem = jnp.ones((3, z))
  np.testing.assert_array_equal(models.condition(tiny_models, tiny_params, z_sem), z_sem)
  assert models.condition(nets, params, z_sem).shape == (3, z)


def test_mu_s_condition_sees_z_sem_only_through_mu_s(mu_s_conditioned):
  """Moving z_sem along the head's pseudo-inverse row j moves what the
  denoiser sees exactly as moving mu_s[j]; moving it in the head's null space
  changes nothing."""
  nets, params = mu_s_conditioned
  head = {"params": params["head"]}
  z = jax.random.normal(jax.random.key(6), (2, nets.diffae.z_dim))
  mu, _ = nets.head.apply(head, z)
  rows = heads.mu_directions(params["head"])
  moved = models.condition(nets, params, z + 0.7 * rows[1])
  expected = nets.head.apply(head, mu.at[:, 1].add(0.7), method="condition")
  np.testing.assert_allclose(moved, expected, atol=1e-4)
  w_mu = params["head"]["proj"]["kernel"][:, :nets.head.latent_dim]
  null = jnp.linalg.svd(w_mu.T)[2][-1]  # z_dim > latent_dim: a direction mu_s ignores
  np.testing.assert_allclose(models.condition(nets, params, z + 3.0 * null),
                             models.condition(nets, params, z), atol=1e-4)


@pytest.mark.slow
def test_the_diffusion_loss_reaches_the_head_through_the_mu_s_condition(mu_s_conditioned):
  nets, params = mu_s_conditioned
  x0, x_t, t = _inputs(nets, batch=4)
  eps = jax.random.normal(jax.random.key(7), x0.shape)
  noise = jax.random.normal(jax.random.key(8), (4, nets.head.latent_dim))

  def loss(p, code_noise):
    z_sem = nets.diffae.apply({"params": p["diffae"]}, x0, method="encode")
    cond = models.condition(nets, p, z_sem, code_noise)
    pred = nets.diffae.apply({"params": p["diffae"]}, x_t, t, cond, method="denoise")
    return jnp.mean(jnp.square(pred - eps))

  grad = jax.jit(jax.grad(loss))  # one compile instead of one per op
  for code_noise in (None, noise):
    grads = grad(params, code_noise)
    for name in ("proj", "expand"):
      assert float(jnp.abs(grads["head"][name]["kernel"]).max()) > 0, name
  # A sampled condition trains the head's log-variance half too.
  logvar_grad = grads["head"]["proj"]["kernel"][:, nets.head.latent_dim:]
  assert float(jnp.abs(logvar_grad).max()) > 0


@pytest.mark.slow
def test_prior_head_init_starts_every_student_at_the_prior_with_the_same_layout(
    test_config, tiny_params):
  config = test_config.copy_and_resolve_references()
  config.model.head_init = "prior"
  nets = models.build_models(config.model)
  params = models.init_params(nets, jax.random.key(0))
  chex.assert_trees_all_equal_shapes(params["head"], tiny_params["head"])
  z_sem = jax.random.normal(jax.random.key(1), (4, config.model.diffae.z_dim))
  mu, logvar = nets.head.apply({"params": params["head"]}, z_sem)
  np.testing.assert_array_equal(mu, 0.0)
  np.testing.assert_array_equal(logvar, 0.0)
  config.model.head_init = "zeros"
  with pytest.raises(ValueError, match="model.head_init = 'zeros'; valid: random, prior"):
    models.init_params(models.build_models(config.model), jax.random.key(0))


def test_flatten_pool_reads_the_map_whole_and_averaging_is_one_of_its_readings(
    test_config, tiny_models, random_diffae_params):
  """enc_pool="flatten" restated: a dense layer on the whole last feature map.
  Its kernel copied from the official 1x1 conv, divided by the number of
  positions, at every position gives back the mean pool exactly."""
  config = test_config.copy_and_resolve_references()
  config.model.diffae.enc_pool = "flatten"
  flat = models.build_models(config.model).diffae
  x0, _, _ = _inputs(tiny_models, batch=3)
  encoder = dict(random_diffae_params["encoder"])
  conv = encoder.pop("out_conv")
  positions = (tiny_models.diffae.image_size // 2 ** (len(config.model.diffae.enc_channel_mult)
                                                       - 1)) ** 2
  kernel = jnp.tile(conv["kernel"][0, 0] / positions, (positions, 1))
  as_mean = dict(random_diffae_params, encoder=dict(
      encoder, out_dense={"kernel": kernel, "bias": conv["bias"]}))
  encode = lambda nets, p, x: nets.apply({"params": p}, x, method="encode")
  mean_code = encode(tiny_models.diffae, random_diffae_params, x0)
  np.testing.assert_allclose(encode(flat, as_mean, x0), mean_code, rtol=1e-5, atol=1e-5)
  fresh = models.abstract_params(models.build_models(config.model))["diffae"]["encoder"]
  assert fresh["out_dense"]["kernel"].shape == kernel.shape and "out_conv" not in fresh
  config.model.diffae.enc_pool = "max"
  with pytest.raises(ValueError, match="model.diffae.enc_pool = 'max'; valid: mean, flatten"):
    models.build_models(config.model)
