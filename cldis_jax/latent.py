"""Diff-AE's latent DDIM: a diffusion model over the semantic code, with the
autoencoder frozen, and unconditional sampling through it.

Training (`--mode=train_latent`, `train_latent.py`) follows the official
latent stage (phizaz/diffae `experiment.py`, `templates_latent.py`): the codes
of the training images, z-scored with their mean and (unbiased) std, are the
data; timesteps are uniform over `latent.num_timesteps` of constant betas
0.008; the net predicts the noise under an L1 loss; AdamW with global-norm
clipping and an EMA of the weights.

Sampling (`sample_images`): latent noise -> latent DDIM (eta 0, no
clipping) -> un-z-scored code -> the image DDIM from fresh x_T (clipped), as
the official `render_uncondition`. Each image's noise is a function of
(seed, its index) alone, so a seed gives the same images however they are
batched or sharded.
"""

import copy
import functools
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cldis_jax import diffusion, errors, memo, models as models_lib, parallel
from cldis_jax.models.latent_net import LatentNet

SUBDIR = "latent"
LOSSES = ("l1", "mse")


class LatentState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  ema_params: dict
  opt_state: optax.OptState
  mean: jax.Array  # the codes' mean and std: net input = (z - mean) / std
  std: jax.Array
  model_step: jax.Array  # the autoencoder checkpoint whose codes it learned


def build(config, code_dim: int) -> LatentNet:
  return LatentNet(channels=code_dim, **dict(config.latent.net))


def check(config) -> None:
  """ConfigError for a latent or sample setting that cannot run."""
  lat, s = config.latent, config.sample
  if lat.loss not in LOSSES:
    raise errors.ConfigError(f"latent.loss = {lat.loss!r}; valid: {', '.join(LOSSES)}")
  diffusion.beta_schedule(lat.beta_schedule, 1)  # a named error for a bad schedule
  for key, steps, total in (("sample.latent_steps", s.latent_steps, lat.num_timesteps),
                            ("sample.image_steps", s.image_steps,
                             config.diffusion.num_timesteps)):
    if total % steps:
      raise errors.ConfigError(f"{key} = {steps} does not divide the {total} timesteps; "
                               "valid: a divisor of it (e.g. 10, 20, 50, 100)")
  if s.edit_directions not in ("mu_s", "navigation"):
    raise errors.ConfigError(f"sample.edit_directions = {s.edit_directions!r}; valid: "
                             "mu_s, navigation")


def process(config, steps: int | None = None) -> diffusion.Diffusion:
  """The latent diffusion (config.latent's schedule), or its ddim{steps}."""
  return diffusion.process(config.latent, steps)


def make_optimizer(config):
  lat = config.latent
  return optax.chain(optax.clip_by_global_norm(lat.grad_clip_norm),
                     optax.adamw(lat.learning_rate, weight_decay=lat.weight_decay))


def code_moments(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) per dimension, the std unbiased (torch's default, as the
  official `conds_std`)."""
  codes = np.asarray(codes, np.float64)
  return codes.mean(0).astype(np.float32), codes.std(0, ddof=1).astype(np.float32)


def normalise(z, mean, std):
  return (z - mean) / std


def unnormalise(z, mean, std):
  return z * std + mean


def init_state(config, net: LatentNet, rng, mean, std, model_step) -> LatentState:
  c = net.channels
  params = net.init(rng, jnp.zeros((1, c)), jnp.zeros((1,), jnp.int32))["params"]
  return LatentState(step=jnp.asarray(0, jnp.int32), params=params,
                     ema_params=jax.tree.map(jnp.copy, params),
                     opt_state=make_optimizer(config).init(params),
                     mean=jnp.asarray(mean, jnp.float32), std=jnp.asarray(std, jnp.float32),
                     model_step=jnp.asarray(model_step, jnp.int32))


def abstract_state(config, net: LatentNet, mesh=None) -> LatentState:
  """Shapes, dtypes and shardings (replicated over `mesh`, default: the
  local devices) of the state, for restoring; no allocation."""
  c = net.channels
  shapes = jax.eval_shape(lambda: init_state(config, net, jax.random.key(0), np.zeros(c),
                                             np.ones(c), 0))
  sharding = parallel.replicated(mesh or parallel.data_mesh(jax.local_devices()))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


def loss_fn(net: LatentNet, proc: diffusion.Diffusion, kind: str, params, z, rng):
  """Mean |eps - eps_theta| (or squared) of normalised codes z (B, C) at
  uniform timesteps."""
  k_t, k_noise = jax.random.split(rng)
  t = jax.random.randint(k_t, (z.shape[0],), 0, proc.num_timesteps)
  noise = jax.random.normal(k_noise, z.shape, jnp.float32)
  eps = net.apply({"params": params}, proc.q_sample(z, t, noise), t)
  err = eps - noise
  return jnp.mean(jnp.abs(err) if kind == "l1" else jnp.square(err))


@memo.per_config
def make_step(config, net: LatentNet):
  """(state, codes (B, C) unnormalised, batch-sharded by the caller,
  rng_root) -> (state, aux), jitted with the state donated."""
  lat, tx = config.latent, make_optimizer(config)
  proc = process(config)

  def step(state: LatentState, z, rng_root):
    rng = jax.random.fold_in(rng_root, state.step)
    z = normalise(z, state.mean, state.std)
    loss, grads = jax.value_and_grad(
        functools.partial(loss_fn, net, proc, lat.loss))(state.params, z, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: lat.ema_decay * e + (1 - lat.ema_decay) * p,
                       state.ema_params, params)
    new = state.replace(step=state.step + 1, params=params, ema_params=ema,
                        opt_state=opt_state)
    return new, dict(loss=loss, grad_norm=optax.tree.norm(grads), finite=jnp.isfinite(loss))

  return jax.jit(step, donate_argnums=0)


def batch_rows(seed: int, step: int, num_rows: int, batch: int) -> np.ndarray:
  """The code rows of latent step `step`, drawn with replacement (the same on resume)."""
  return np.random.default_rng((seed, 2, step)).integers(num_rows, size=batch)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def sample_noise(seed, indices, code_dim: int, image_shape: tuple, dtype=jnp.float32):
  """(latent noise (N, code_dim), x_T (N, H, W, C)) of images `indices` of
  `seed`: each row from its own threefry key (whatever JAX's default
  PRNG), so batches and shards agree."""
  def one(i):
    root = jax.random.key(seed, impl="threefry2x32")
    k_latent, k_image = jax.random.split(jax.random.fold_in(root, i))
    return (jax.random.normal(k_latent, (code_dim,), dtype),
            jax.random.normal(k_image, image_shape, dtype))
  return jax.vmap(one)(indices)


@functools.partial(jax.jit, static_argnums=(0, 1))
def sample_codes(net: LatentNet, proc: diffusion.Diffusion, latent_params, mean, std, noise):
  """Latent noise (N, C) -> codes (N, C) by the latent DDIM, un-z-scored."""
  eps_fn = lambda z, t: net.apply({"params": latent_params}, z, t)
  return unnormalise(proc.ddim_sample(eps_fn, noise, clip=False), mean, std)


@functools.partial(jax.jit, static_argnums=(0, 1))
def decode_codes(models, proc: diffusion.Diffusion, params, z_sem, x_T):
  """Codes with their x_T -> images by the image DDIM (clipped)."""
  return proc.ddim_sample(lambda x, t: models_lib.denoise(models, params, x, t, z_sem), x_T)


def load_generator(workdir: str, config):
  """(`config` with the latent DDIM's own latent.* settings, LatentNet,
  LatentState) of `<workdir>/latent`'s latest checkpoint: what `generate`
  takes. NoCheckpointError if there is none."""
  stored, net, state = restore(workdir)
  config = copy.deepcopy(config)
  config.latent = stored.latent
  check(config)
  return config, net, state


def restore(workdir: str):
  """(config stored with it, LatentNet, LatentState on the host) of
  `<workdir>/latent`'s latest checkpoint; NoCheckpointError if none."""
  from cldis_jax import checkpoint  # pylint: disable=g-import-not-at-top  (imports train_step)
  ckpt = checkpoint.Checkpoints(workdir, async_save=False, read_only=True,
                                subdir=os.path.join(SUBDIR, "checkpoints"))
  try:
    if ckpt.latest_step() is None:
      raise errors.NoCheckpointError(
          f"no latent DDIM checkpoint in {ckpt.directory}: run --mode=train_latent on "
          f"{workdir} first")
    config = ckpt.restore_config()
    net = build(config, models_lib.build_models(config.model).code_dim)
    return config, net, jax.device_get(ckpt.restore(abstract_state(config, net)))
  finally:
    ckpt.close()


def generate(config, models, params, net: LatentNet, state: LatentState, count: int,
             seed: int, *, devices=None) -> dict[str, np.ndarray]:
  """`count` unconditional samples of `seed` -> {"images" (N, H, W, C) in
  [-1, 1], "z_sem" (N, code_dim), "x_T"}, `sample.batch_size` at a time,
  each batch split over the local devices (or `devices`)."""
  latent_proc = process(config, config.sample.latent_steps)
  image_proc = diffusion.process(config.diffusion, config.sample.image_steps,
                                 guidance=config.sample.guidance)
  put, shard = _placement(devices)
  params, latent_params = put(params), put(state.ema_params)
  mean, std = put(state.mean), put(state.std)

  def body(indices):
    noise, x_T = map(shard, sample_noise(seed, indices, net.channels, _image_shape(config)))
    z = sample_codes(net, latent_proc, latent_params, mean, std, noise)
    return dict(images=decode_codes(models, image_proc, params, z, x_T), z_sem=z, x_T=x_T)
  return _in_batches(config, count, body, devices)


def autoencode(config, models, params, images, seed: int, *, devices=None) -> np.ndarray:
  """Images encoded, then decoded from fresh x_T (of `seed`, one per row)
  with sample.image_steps steps: Diff-AE's autoencoding protocol."""
  image_proc = diffusion.process(config.diffusion, config.sample.image_steps,
                                 guidance=config.sample.guidance)
  put, shard = _placement(devices)
  params = put(params)

  def body(indices):
    rows = np.minimum(np.asarray(indices), len(images) - 1)
    _, x_T = sample_noise(seed, indices, models.code_dim, _image_shape(config))
    x0, x_T = shard(jnp.asarray(images[rows])), shard(x_T)
    z = models_lib.semantic_code(models, params, x0)
    return dict(images=decode_codes(models, image_proc, params, z, x_T))
  return _in_batches(config, len(images), body, devices)["images"]


def _image_shape(config) -> tuple[int, int, int]:
  m = config.model
  return (m.image_size, m.image_size, m.in_channels)


def _placement(devices):
  mesh = parallel.data_mesh(jax.local_devices() if devices is None else devices)
  return (lambda a: jax.device_put(a, parallel.replicated(mesh)),
          lambda a: jax.device_put(a, parallel.batch_sharding(mesh)))


def _in_batches(config, count: int, body, devices) -> dict[str, np.ndarray]:
  """body(indices) -> {name: (B, ...)} over rows 0..count-1, in batches of
  sample.batch_size rounded up to the device count; the padding dropped."""
  size = len(jax.local_devices() if devices is None else devices)
  batch = -(-config.sample.batch_size // size) * size
  out = {}
  for start in range(0, count, batch):
    values = body(np.arange(start, start + batch, dtype=np.int32))
    for name, value in values.items():
      out.setdefault(name, []).append(np.asarray(value)[:min(batch, count - start)])
  return {k: np.concatenate(v) for k, v in out.items()}
