"""Mesh and shardings: one 1-D `data` axis over every device of every process;
batches are split along it and parameters are replicated. On a CPU-only
machine the CPU is split into one host device per core (`split_cpu`), and a
single CPU device runs its convolutions on Eigen (`eigen_convolutions`)."""

import os

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


def cpu_cores() -> int:
  """Cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_device_count(requested: int, batch_size: int, cores: int) -> int:
  """`requested`, or for 0 the largest count up to `cores` that divides the batch."""
  return requested or next(n for n in range(max(1, cores), 0, -1) if batch_size % n == 0)


def split_cpu(requested: int, batch_size: int) -> int | None:
  """Before JAX starts: split a CPU into host devices, the batch sharded over
  them (one XLA:CPU device keeps about 1.3 cores busy; see docs/benchmarks.md).

  `requested` 0 means one per core, or the largest count under that dividing
  `batch_size`; 1 keeps JAX's single CPU device, with `eigen_convolutions`.
  Returns the count set, or None where it was already fixed (by
  `--xla_force_host_platform_device_count` in XLA_FLAGS, or because JAX is
  already running). Accelerators are not affected: on a GPU or TPU host the
  CPU devices are not the default ones.
  """
  if requested < 0:
    raise errors.UsageError(f"--cpu_devices = {requested}; valid: 0 (one per core) or a "
                            "positive count")
  if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    return None
  count = cpu_device_count(requested, batch_size, cpu_cores())
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # backends already initialised (e.g. called from a running program)
    return None
  if count == 1:
    eigen_convolutions()
  return count


# XLA:CPU (jaxlib 0.10) hands convolutions, and some dots, reductions and
# elementwise chains, to YNNPACK, one thread per operation: the right choice
# when the CPU is split into devices that run side by side, not for a single
# device, where Eigen's convolutions, threaded inside each operation, train
# and navigate 1.1-1.3x faster (docs/benchmarks.md).
NO_YNNPACK = "--xla_cpu_experimental_ynn_fusion_type="


def eigen_convolutions() -> None:
  """Before JAX starts: turn XLA:CPU's YNNPACK fusions off (`NO_YNNPACK` in
  XLA_FLAGS), unless the user's XLA_FLAGS choose them."""
  xla_flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" not in xla_flags:
    os.environ["XLA_FLAGS"] = f"{xla_flags} {NO_YNNPACK}".strip()


def describe_devices(cpu_split: int | None) -> str:
  """The log line that says which devices run, and how a CPU was split."""
  devices = jax.devices()
  line = f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"
  if devices[0].platform == "cpu" and cpu_split and cpu_split > 1:
    line += (f": the CPU split into {cpu_split} devices, each taking "
             f"1/{cpu_split} of every batch (--cpu_devices=1 for one device)")
  elif devices[0].platform == "cpu" and NO_YNNPACK in os.environ.get("XLA_FLAGS", "").split():
    line += ": one device, convolutions on Eigen (XLA:CPU's YNNPACK fusions off)"
  return line
