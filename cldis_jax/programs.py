"""Every jitted program of a run, ready to lower for any devices without
allocating anything: the function training, navigation, evaluation or
editing calls (never a copy of it), and its arguments as
`jax.ShapeDtypeStruct`s carrying the shardings that program gives them.

`--mode=compile` lowers and compiles these for a TPU topology's devices
(`compile_check.py`); the same functions run on this machine's devices.

| program  | devices              | batch                                  |
|----------|----------------------|----------------------------------------|
| train    | all                  | train.batch_size, sharded              |
| navigate | one                  | navigate.batch_size                    |
| encode   | one process's        | evaluate.encode_batch, sharded         |
| invert   | one                  | edit.dataset_images, edit.invert_steps |
| decode   | one                  | edit.dataset_images, edit.decode_steps |
| traverse | one                  | evaluate.ctd: each source's K x (2 steps + 1) frames, diffusion.sample_steps |
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import SingleDeviceSharding

from cldis_jax import (codes, diffusion, errors, inference, models as models_lib, navigation,
                       parallel, subspaces, supervision, train_step)

NAMES = ("train", "navigate", "encode", "invert", "decode", "traverse")


@dataclasses.dataclass(frozen=True)
class Program:
  name: str
  lower: Callable[[], Any]  # () -> jax.stages.Lowered
  devices: int  # devices it runs on
  batch: int  # images per call, over all its devices
  arguments: dict  # name -> pytree of ShapeDtypeStructs (what `lower` passes)


def _abstract(tree, sharding):
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def _images(config, batch: int, sharding):
  m = config.model
  return jax.ShapeDtypeStruct((batch, m.image_size, m.image_size, m.in_channels), jnp.float32,
                              sharding=sharding)


def _key(sharding):
  return jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding)


# The capabilities that add arrays to the train step's batch, each declaring
# them once: config, batch, devices -> name -> (shape, dtype).
BATCH_ARRAYS = (subspaces.batch_arrays, supervision.batch_arrays)


def _train_batch(config, batch: int, sharding) -> dict:
  """The train step's `batch` argument: the images and every array that
  BATCH_ARRAYS declares for this config."""
  out = {"image": _images(config, batch, sharding)}
  for declared in BATCH_ARRAYS:
    for name, (shape, dtype) in declared(config, batch, len(sharding.device_set)).items():
      out[name] = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
  return out


def train(config, models, devices, batch_size: int | None = None) -> Program:
  """The closed-loop step of `train.py`, the state donated, over all `devices`."""
  mesh = parallel.data_mesh(devices)
  batch = batch_size or config.train.batch_size
  parallel.check_batch_divides(batch, mesh)
  args = dict(state=train_step.abstract_state(config, models, mesh),
              batch=_train_batch(config, batch, parallel.batch_sharding(mesh)),
              rng=_key(parallel.replicated(mesh)))
  step = train_step.make_train_step(config, models, mesh)
  return Program("train", lambda: step.lower(*args.values()), mesh.size, batch, args)


def navigate(config, models, device) -> Program:
  """The navigation step of `navigate.py` on one device, the model frozen."""
  nav = navigation.build(config)
  one = SingleDeviceSharding(device)
  batch = config.navigate.batch_size
  args = dict(state=_abstract(navigation.abstract_state(config, nav), one),
              params=_abstract(models_lib.abstract_params(models), one),
              images=_images(config, batch, one), rng=_key(one))
  step = navigation.make_step(config, models, nav)
  return Program("navigate", lambda: step.lower(*args.values()), 1, batch, args)


def encode(config, models, devices) -> Program:
  """evaluate's encoder (`codes.encode_batch`): a batch split over `devices`
  (one process's), every code."""
  mesh = parallel.data_mesh(devices)
  batch = -(-config.evaluate.encode_batch // mesh.size) * mesh.size  # as CodeTable rounds it
  args = dict(params=_abstract(models_lib.abstract_params(models), parallel.replicated(mesh)),
              images=_images(config, batch, parallel.batch_sharding(mesh)))
  branches = codes.branches_of(config.evaluate.representations)
  return Program("encode", lambda: codes.encode_batch.lower(models, *args.values(), branches),
                 mesh.size, batch, args)


def _ddim(config, models, device, name: str, steps: int, fn) -> Program:
  one = SingleDeviceSharding(device)
  batch = config.edit.dataset_images
  guidance = config.edit.guidance if name == "decode" else 1.0  # inversion is never guided
  process = diffusion.process(config.diffusion, steps, guidance=guidance)
  args = dict(params=_abstract(models_lib.abstract_params(models), one),
              images=_images(config, batch, one),
              z_sem=jax.ShapeDtypeStruct((batch, models.code_dim), jnp.float32,
                                         sharding=one))
  if name == "decode":  # (z_sem, x_T)
    args = dict(params=args["params"], z_sem=args["z_sem"], x_T=args["images"])
  return Program(name, lambda: fn.lower(models, process, *args.values()), 1, batch, args)


def invert(config, models, device) -> Program:
  """edit's DDIM inversion (`inference.invert`), `edit.invert_steps` steps."""
  return _ddim(config, models, device, "invert", config.edit.invert_steps, inference.invert)


def decode(config, models, device) -> Program:
  """edit's DDIM decoding (`inference.decode`), `edit.decode_steps` steps."""
  return _ddim(config, models, device, "decode", config.edit.decode_steps, inference.decode)


def traverse(config, models, device) -> Program:
  """evaluate's CTD traversals (`inference.decode_along`): for each of
  `evaluate.ctd.num_sources` sources, d_v directions x (2 steps + 1) frames
  decoded together by `diffusion.sample_steps` DDIM steps."""
  one = SingleDeviceSharding(device)
  c, m = config.evaluate.ctd, config.model
  n, k, f = c.num_sources, m.latent_dim, 2 * c.steps + 1
  sds = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=one)
  args = dict(params=_abstract(models_lib.abstract_params(models), one),
              z_sem=sds(n, models.code_dim), x_T=_images(config, n, one),
              directions=sds(k, models.code_dim), strengths=sds(k, f))
  process = diffusion.process(config.diffusion, config.diffusion.sample_steps)
  return Program("traverse", lambda: inference.decode_along.lower(models, process,
                                                                  *args.values()),
                 1, k * f, args)


_ONE_DEVICE = {"navigate": navigate, "invert": invert, "decode": decode, "traverse": traverse}


def build(name: str, config, models, devices, batch_size: int | None = None) -> Program:
  """Program `name` for `devices` (a topology's or this machine's); programs
  of one process get the devices of the first."""
  check_names([name])
  if name == "train":
    return train(config, models, devices, batch_size)
  if name == "encode":
    return encode(config, models, [d for d in devices
                                   if d.process_index == devices[0].process_index])
  return _ONE_DEVICE[name](config, models, devices[0])


def check_names(names) -> None:
  """ConfigError naming any entry of `names` that is not a program."""
  for name in names:
    if name not in NAMES:
      raise errors.ConfigError(f"compile.programs: {name!r} is not a program; valid: "
                               f"{', '.join(NAMES)}")
