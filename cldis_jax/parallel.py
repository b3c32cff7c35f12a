"""Mesh and shardings: one 1-D `data` axis over every device of every process;
batches are split along it and parameters are replicated."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cldis_jax import errors

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divides(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
  if batch_size <= 0 or batch_size % mesh.size:
    raise errors.ConfigError(f"{what} = {batch_size} does not divide over the {mesh.size} devices "
                             f"of the mesh; use a positive multiple of {mesh.size}")


def local_rows(sharding: NamedSharding, global_batch: int) -> slice:
  """The contiguous rows of a global batch that this process's devices hold."""
  spans = {(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop)
           for s in sharding.addressable_devices_indices_map((global_batch,)).values()}
  start, stop = min(a for a, _ in spans), max(b for _, b in spans)
  if sum(b - a for a, b in spans) != stop - start:
    raise ValueError(f"this process's rows of the batch are not contiguous: {sorted(spans)}")
  return slice(start, stop)


def replicate(array: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host array every process holds identically -> one array replicated on
  every device of the mesh (also when some devices belong to other processes)."""
  array = np.asarray(array)
  return jax.make_array_from_process_local_data(replicated(mesh), array, array.shape)
