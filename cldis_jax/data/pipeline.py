"""The input pipeline, written by hand rather than with grain.

Which examples make global batch `step` is a pure function of (seed, step,
dataset size): epoch e = step // steps_per_epoch is a permutation drawn from
(seed, e), and the step takes the next `batch_size` of it (the rest of an
epoch is dropped). So a resumed run sees exactly the batches an uninterrupted
run would, with no iterator state to checkpoint beyond the step, and the
global batch does not depend on how many processes read it. Each process
reads only the rows its devices hold (disjoint, together the whole batch)
and the rows are assembled into one global `jax.Array` sharded over the
mesh's `data` axis. Reading runs in a small thread pool and a background
thread keeps `prefetch` batches ready.

Why not grain: its determinism and multi-host sharding are what this gives
in ~150 lines, but it would add a dependency, iterator state to checkpoint,
and worker processes competing with XLA for the same two cores here (and
`worker_count > 0` needs absl flags parsed, which notebooks and tests lack).
"""

import atexit
import concurrent.futures
import dataclasses
import functools
import itertools
import queue
import threading

import jax
import numpy as np

from cldis_jax import errors, parallel
from cldis_jax.data.source import Source

_FLIP_STREAM = 1  # seeds flips apart from the epoch permutations
_RUNNING: set = set()  # (stop event, producer thread) of unfinished iterators


@atexit.register
def _stop_producers():
  """A producer still inside JAX while the interpreter tears JAX down aborts the
  process, so unfinished iterators are stopped before exit."""
  for stop, thread in list(_RUNNING):
    stop.set()
    thread.join(timeout=5.0)


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """Global batch `step` = which dataset rows, and which of them to flip."""
  num_examples: int
  batch_size: int
  seed: int = 0
  shuffle: bool = True
  hflip: bool = False

  def __post_init__(self):
    if not 0 < self.batch_size <= self.num_examples:
      raise errors.ConfigError(f"batch size {self.batch_size} must be in 1..{self.num_examples} "
                               "(the number of examples)")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  @functools.lru_cache(maxsize=2)
  def epoch_order(self, epoch: int) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.num_examples)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def indices(self, step: int) -> np.ndarray:
    epoch, k = divmod(int(step), self.steps_per_epoch)
    return self.epoch_order(epoch)[k * self.batch_size:(k + 1) * self.batch_size]

  def flips(self, step: int) -> np.ndarray:
    if not self.hflip:
      return np.zeros(self.batch_size, bool)
    return np.random.default_rng([self.seed, _FLIP_STREAM, int(step)]).random(
        self.batch_size) < 0.5


def to_model_range(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return images.astype(np.float32) * np.float32(2 / 255) - np.float32(1)


class InputPipeline:
  """Batches of `source` following `plan`.

  With a `sharding` (the batch sharding of a mesh), `global_batch(step)` and
  `iterate()` give dicts of global `jax.Array`s; this process reads the rows
  its devices hold. Without one, `iterate()` gives this process's numpy rows,
  where `process_index` / `process_count` pick a contiguous block of them.
  Every batch has `image` (float32 in [-1, 1]), `index` (dataset rows) and the
  source's labels (`factors`, `attributes`, `region` maps) where it has them.
  """

  def __init__(self, source: Source, plan: BatchPlan, *, sharding=None,
               process_index: int | None = None, process_count: int | None = None,
               num_threads: int = 2, prefetch: int = 2):
    if len(source) != plan.num_examples:
      raise ValueError(f"plan is for {plan.num_examples} examples, {source.name} has "
                       f"{len(source)}")
    self.source, self.plan, self.sharding = source, plan, sharding
    self.prefetch = max(1, prefetch)
    if sharding is not None:
      self.rows = parallel.local_rows(sharding, plan.batch_size)
    else:
      index = jax.process_index() if process_index is None else process_index
      count = jax.process_count() if process_count is None else process_count
      if plan.batch_size % count:
        raise errors.ConfigError(
            f"batch size {plan.batch_size} does not divide over {count} processes")
      local = plan.batch_size // count
      self.rows = slice(index * local, (index + 1) * local)
    self._pool = (concurrent.futures.ThreadPoolExecutor(num_threads)
                  if num_threads > 1 else None)
    self._num_threads = num_threads

  def local_batch(self, step: int) -> dict[str, np.ndarray]:
    indices = self.plan.indices(step)[self.rows]
    flips = self.plan.flips(step)[self.rows]
    batch = self._read(indices)
    for key in ("image", "region"):  # flip each row's pixel maps together
      if key in batch:
        flip = flips.reshape((-1,) + (1,) * (batch[key].ndim - 1))
        batch[key] = np.where(flip, batch[key][:, :, ::-1], batch[key])
    out = {"image": to_model_range(batch.pop("image")), "index": indices.astype(np.int32)}
    out.update({k: v.astype(np.int32) for k, v in batch.items()})
    return out

  def global_batch(self, step: int) -> dict[str, jax.Array]:
    if self.sharding is None:
      raise ValueError("global_batch needs the pipeline to be built with a sharding")
    local = self.local_batch(step)
    return {k: jax.make_array_from_process_local_data(
        self.sharding, v, (self.plan.batch_size,) + v.shape[1:]) for k, v in local.items()}

  def iterate(self, start_step: int = 0, end_step: int | None = None):
    """Batches for steps start_step, start_step + 1, ... (prefetched)."""
    make = self.global_batch if self.sharding is not None else self.local_batch
    steps = itertools.count(start_step) if end_step is None else range(start_step, end_step)
    ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
    stop = threading.Event()

    def produce():
      try:
        for step in steps:
          item = (make(step), None)
          while not stop.is_set():
            try:
              ready.put(item, timeout=0.1)
              break
            except queue.Full:
              pass
          if stop.is_set():
            return
        ready.put((None, None))
      except BaseException as error:  # pylint: disable=broad-except
        ready.put((None, error))

    producer = threading.Thread(target=produce, name="input-pipeline", daemon=True)
    producer.start()
    _RUNNING.add((stop, producer))
    try:
      while True:
        batch, error = ready.get()
        if error is not None:
          raise error
        if batch is None:
          return
        yield batch
    finally:  # the producer may be inside JAX: let it finish before JAX can shut down
      stop.set()
      producer.join(timeout=30.0)
      _RUNNING.discard((stop, producer))

  def _read(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    if self._pool is None or len(indices) < 2 * self._num_threads:
      return self.source.__getitems__(indices)
    chunks = np.array_split(indices, self._num_threads)
    parts = list(self._pool.map(self.source.__getitems__, chunks))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
