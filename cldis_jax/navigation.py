"""Navigation, the method: self-supervised discovery of K directions in z_sem
space with the trained model frozen (Voynov & Babenko 2020, our
reading of CL-Dis's navigation step; docs/navigation.md).

One sample: a real image x, its z_sem, a direction k ~ U{0..K-1} and a shift
eps = shift_max * U(-1, 1) with |eps| >= shift_min (sign kept). The shift is
in units of the data's spread along the direction: z' = z + eps * sigma_k *
A_k, sigma_k^2 = A_k^T Cov(z_sem) A_k over `navigate.reference_images`
images (held fixed in the gradient). The pair (z, z') is decoded from one
shared noisy x_t of the real image at t_start by `decode_steps` DDIM steps (1:
the one-step x0 prediction), and the reconstructor sees the two images and
predicts k (cross-entropy, weight w_cls) and eps (L1, weight w_shift). The
directions and the reconstructor minimise the same loss with Adam.

This module is the library: the models, the state, the loss and the jitted
step, the held-out accuracy, and reading a finished navigation back
(`restore`, `directions_of`). `navigate.py` is the program that runs it.
"""

import os
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cldis_jax import (checkpoint, config_lib, data, diffusion, errors, grids, inference, memo,
                       models as models_lib)
from cldis_jax.models.navigator import Directions, Reconstructor

SUBDIR = "navigation"


class NavModels(NamedTuple):
  directions: Directions
  reconstructor: Reconstructor


class NavState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict  # {"directions", "reconstructor"}
  opt_state: optax.OptState
  z_mean: jax.Array  # z_sem statistics the shifts are scaled by (not trained)
  z_cov: jax.Array
  basis: jax.Array  # rows: z_sem's principal axes (init "pca") or the identity
  model_step: jax.Array  # the training checkpoint navigated


def num_directions(config) -> int:
  return config.navigate.num_directions or config.model.latent_dim


def build(config) -> NavModels:
  n = config.navigate
  config_lib.check_known_keys(n.reconstructor, ("width", "stage_sizes", "stem", "inputs"),
                              "navigate.reconstructor")
  k = num_directions(config)
  return NavModels(
      Directions(k, models_lib.build_models(config.model).code_dim, n.parameterization, n.init),
      Reconstructor(k, n.reconstructor.width, tuple(n.reconstructor.stage_sizes),
                    n.reconstructor.stem, n.reconstructor.inputs))


def decoding_process(diffusion_config, t_start: float, steps: int) -> diffusion.Diffusion:
  """The DDIM steps from timestep round(t_start * T) down to x0: `steps`
  evenly spaced timesteps ending at t_start (steps=1: one x0 prediction)."""
  top = int(round(t_start * (diffusion_config.num_timesteps - 1)))
  if not 1 <= steps <= top:
    raise errors.ConfigError(f"navigate.decode_steps={steps} must be in [1, {top}] for "
                             f"navigate.t_start={t_start}")
  return diffusion.process(diffusion_config, steps, t_start=t_start)


def sample_shifts(rng, batch: int, k: int, shift_max: float, shift_min: float):
  """Direction indices (B,) and shifts (B,): shift_max * U(-1, 1), snapped to
  +-shift_min below it."""
  k_idx, k_eps = jax.random.split(rng)
  index = jax.random.randint(k_idx, (batch,), 0, k)
  eps = shift_max * jax.random.uniform(k_eps, (batch,), minval=-1.0, maxval=1.0)
  eps = jnp.where(jnp.abs(eps) < shift_min, jnp.where(eps < 0, -shift_min, shift_min), eps)
  return index, eps


SHIFT_SCALES = ("direction", "global")


def direction_sigma(directions, z_cov, shift_scale: str):
  """The unit of shift along each direction (rows of `directions`): the data's
  std along it ("direction"), or along z_sem's first principal axis for
  every direction ("global")."""
  if shift_scale == "direction":
    var = jnp.einsum("kd,de,ke->k", directions, z_cov, directions)
  elif shift_scale == "global":
    var = jnp.full(directions.shape[:1], jnp.linalg.eigvalsh(z_cov)[-1])
  else:
    raise errors.ConfigError(f"navigate.shift_scale {shift_scale!r} is not one of {SHIFT_SCALES}")
  return jnp.sqrt(jnp.maximum(var, 1e-12))


def make_loss(config, models, nav: NavModels):
  """(nav_params, model_params, z_cov, basis, x0, rng) -> (loss, aux)."""
  n = config.navigate
  full = diffusion.process(config.diffusion)
  process = decoding_process(config.diffusion, n.t_start, n.decode_steps)
  t_start = int(process.timesteps[-1])
  k = num_directions(config)

  def loss_fn(nav_params, params, z_cov, basis, x0, rng):
    k_shift, k_noise = jax.random.split(rng)
    z = jax.lax.stop_gradient(models_lib.semantic_code(models, params, x0))
    a = nav.directions.apply({"params": nav_params["directions"]}, basis)
    sigma = jax.lax.stop_gradient(direction_sigma(a, z_cov, n.shift_scale))
    index, eps = sample_shifts(k_shift, x0.shape[0], k, n.shift_max, n.shift_min)
    z_b = z + (eps * sigma[index])[:, None] * a[index]
    x_t = full.q_sample(x0, jnp.full((x0.shape[0],), t_start),
                        jax.random.normal(k_noise, x0.shape))
    z_pair = jnp.concatenate([z, z_b])

    def eps_fn(x, t):
      return models_lib.denoise(models, params, x, t, z_pair)
    if n.remat and n.decode_steps > 1:
      eps_fn = jax.checkpoint(eps_fn)
    images = process.ddim_sample(eps_fn, jnp.concatenate([x_t, x_t]), unroll=True)
    x_a, x_b = jnp.split(images, 2)
    logits, eps_hat = nav.reconstructor.apply({"params": nav_params["reconstructor"]},
                                              x_a, x_b)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, index).mean()
    l1 = jnp.abs(eps_hat - eps).mean()
    correct = (jnp.argmax(logits, -1) == index).astype(jnp.float32)
    aux = dict(loss_cls=ce, loss_shift=l1, accuracy=correct.mean(),
               pair_difference=jnp.abs(x_b - x_a).mean(),
               correct=correct, index=index)
    return n.w_cls * ce + n.w_shift * l1, aux

  return loss_fn


def make_optimizer(config):
  return optax.adam(config.navigate.learning_rate)


def principal_axes(z_cov) -> np.ndarray:
  """Rows: eigenvectors of the covariance, largest variance first."""
  _, vectors = np.linalg.eigh(np.asarray(z_cov, np.float64))
  return vectors[:, ::-1].T


def init_state(config, nav: NavModels, rng, z_mean, z_cov, model_step) -> NavState:
  k_dir, k_rec = jax.random.split(rng)
  s = config.model.image_size, config.model.image_size, config.model.in_channels
  x = jnp.zeros((1,) + s, jnp.float32)
  basis = jnp.asarray(principal_axes(z_cov) if nav.directions.start == "pca"
                      else np.eye(len(z_mean)), jnp.float32)
  params = dict(directions=nav.directions.init(k_dir, basis)["params"],
                reconstructor=nav.reconstructor.init(k_rec, x, x)["params"])
  return NavState(step=jnp.asarray(0, jnp.int32), params=params,
                  opt_state=make_optimizer(config).init(params),
                  z_mean=jnp.asarray(z_mean, jnp.float32), z_cov=jnp.asarray(z_cov, jnp.float32),
                  basis=basis,
                  model_step=jnp.asarray(model_step, jnp.int32))


def abstract_state(config, nav: NavModels) -> NavState:
  z = nav.directions.z_dim
  return jax.eval_shape(lambda: init_state(config, nav, jax.random.key(0),
                                           np.zeros(z), np.zeros((z, z)), 0))


@memo.per_config
def make_step(config, models, nav: NavModels):
  """(state, model_params, images, rng_root) -> (state, aux), jitted, state donated."""
  loss_fn = make_loss(config, models, nav)
  tx = make_optimizer(config)

  def step(state: NavState, params, x0, rng_root):
    rng = jax.random.fold_in(rng_root, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, params, state.z_cov, state.basis, x0, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
    aux = {k: v for k, v in aux.items() if k not in ("correct", "index")}
    return new, dict(aux, loss=loss, finite=jnp.isfinite(loss))

  return jax.jit(step, donate_argnums=0)


@memo.per_config
def make_accuracy(config, models, nav: NavModels):
  """(nav_params, model_params, z_cov, basis, images, rng) -> (correct (B,),
  index (B,), mean |shift error|), jitted: the reconstructor on fresh pairs."""
  loss_fn = make_loss(config, models, nav)

  def accuracy(nav_params, params, z_cov, basis, x0, rng):
    _, aux = loss_fn(nav_params, params, z_cov, basis, x0, rng)
    return aux["correct"], aux["index"], aux["loss_shift"]

  return jax.jit(accuracy)


def batch_rows(seed: int, step: int, num_rows: int, batch: int, stream: int = 0) -> np.ndarray:
  """The image rows of navigation step `step` (the same on resume)."""
  return np.random.default_rng((seed, stream, step)).integers(num_rows, size=batch)


def held_out_accuracy(config, accuracy_fn, state: NavState, params, source) -> dict:
  """Reconstructor accuracy on `accuracy_batches` fixed batches (fixed images,
  directions, shifts and noise), overall and per direction."""
  n = config.navigate
  k = num_directions(config)
  hits, counts, shift_err = np.zeros(k), np.zeros(k), []
  for b in range(n.accuracy_batches):
    rows = batch_rows(config.seed, b, len(source), n.batch_size, stream=1)
    x0 = data.images_at(source, rows)
    correct, index, err = jax.device_get(accuracy_fn(
        state.params, params, state.z_cov, state.basis, x0, jax.random.key(10_000 + b)))
    np.add.at(hits, index, correct)
    np.add.at(counts, index, 1)
    shift_err.append(float(err))
  per_direction = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
  return dict(accuracy=float(hits.sum() / counts.sum()), shift_mae=float(np.mean(shift_err)),
              per_direction_accuracy=per_direction.tolist())


def directions_of(config, nav: NavModels, state: NavState) -> tuple[np.ndarray, np.ndarray]:
  """(directions (K, z_dim), sigma (K,)): z_sem + s * sigma_k * directions_k
  is a shift of s in the units navigation trained with."""
  a = nav.directions.apply({"params": state.params["directions"]}, state.basis)
  return np.asarray(a), np.asarray(direction_sigma(a, state.z_cov, config.navigate.shift_scale))


def restore(workdir: str, config=None):
  """(config, NavModels, NavState) of `<workdir>/navigation`'s latest
  checkpoint, with the navigation config stored there unless one is given."""
  ckpt = checkpoint.Checkpoints(workdir, async_save=False, read_only=True,
                                subdir=os.path.join(SUBDIR, "checkpoints"))
  try:
    if ckpt.latest_step() is None:
      raise errors.NoCheckpointError(f"no navigation checkpoint in {ckpt.directory}: run "
                                            f"--mode=navigate on {workdir} first")
    config = config or ckpt.restore_config()
    nav = build(config)
    state = ckpt.restore(abstract_state(config, nav))
  finally:
    ckpt.close()
  return config, nav, jax.device_get(state)


def traversal_grid(config, models, params, nav, state, source) -> np.ndarray:
  """uint8 grid: row k sweeps direction k over +-traversal_range std, decoded
  from the first preview image's inverted x_T."""
  n = config.navigate
  a, sigma = directions_of(config, nav, state)
  unit = np.linspace(-1.0, 1.0, n.traversal_steps, dtype=np.float32)
  strengths = n.traversal_range * sigma[:, None] * unit[None, :]
  x0 = data.images_at(source, [0])
  process = diffusion.process(config.diffusion, config.diffusion.sample_steps)
  frames = inference.diffae_traversals(models, process, params, x0, a, strengths)[0]
  return grids.tile(grids.to_uint8(frames))
