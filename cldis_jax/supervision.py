"""Which images carry which labels (config.supervision), and the two input
pipelines a partially labelled run trains on.

A label table is (num_images, k) int32, one column per factor of
`model.labels.factors`, -1 where the value is unknown. Its rows come from:

- datasets with ground truth: `num_labelled` images drawn once from
  config.seed, the same images for every factor (ZeroDIM's "partial but
  complete" labels), read from the source's factors;
- image folders: a CSV file with a `file` column (paths relative to
  data.dir) and one column per factor, whose cells are values from
  `supervision.value_names.<factor>` or empty.

Each step trains on a batch of all images (with the labels they have) and a
batch of labelled images; both are pure functions of (seed, step), so a
resumed run sees the batches an uninterrupted one would.
"""

import csv
import os

import numpy as np

from cldis_jax import data, errors, parallel
from cldis_jax.data.pipeline import BatchPlan, InputPipeline
from cldis_jax.data.source import Source

_LABEL_STREAM = 0x1abe1  # seeds the labelled subset apart from the batch order


class LabelsFileError(errors.UserError, ValueError):
  """A labels file names an unknown image, factor or value."""


def factors_of(config) -> tuple[str, ...]:
  return tuple(config.model.labels.factors)


def enabled(config) -> bool:
  return bool(factors_of(config))


def labelled_batch_size(config, num_devices: int = 1) -> int:
  """supervision.batch_size, or train.batch_size // 8 rounded up to a
  multiple of the devices (at least one image per device)."""
  if config.supervision.batch_size:
    return config.supervision.batch_size
  return -(-max(1, config.train.batch_size // 8) // num_devices) * num_devices


def batch_arrays(config, batch: int, num_devices: int = 1) -> dict[str, tuple[tuple, type]]:
  """The train step's batch arrays with labelled factors, name -> (shape,
  dtype) for `batch` images over `num_devices`: the batch's labels (-1 where
  unknown), and the labelled batch drawn beside it with its labels
  (`step_inputs` builds them)."""
  if not enabled(config):
    return {}
  k, few, m = len(factors_of(config)), labelled_batch_size(config, num_devices), config.model
  return {"labels": ((batch, k), np.int32),
          "labelled_image": ((few, m.image_size, m.image_size, m.in_channels), np.float32),
          "labelled_labels": ((few, k), np.int32)}


def check(config) -> None:
  """Config-only checks, before anything is built."""
  if not enabled(config):
    return
  s = config.supervision
  for key in ("w_supervised", "w_classify", "w_entropy", "w_decay", "residual_std"):
    if s[key] < 0:
      raise errors.ConfigError(f"supervision.{key} = {s[key]!r}; valid: a number >= 0")
  if s.num_labelled < 1 and not s.file:
    raise errors.ConfigError(f"supervision.num_labelled = {s.num_labelled!r}; valid: an "
                             "integer >= 1 (images that carry labels)")
  if s.batch_size < 0:
    raise errors.ConfigError(f"supervision.batch_size = {s.batch_size!r}; valid: an integer "
                             ">= 1, or 0 for train.batch_size // 8")


def label_table(config, source: Source) -> np.ndarray:
  """(len(source), k) int32 labels, -1 where unknown (see the module doc)."""
  if config.supervision.file:
    return _table_from_file(config, source)
  return _table_from_factors(config, source)


def _table_from_factors(config, source: Source) -> np.ndarray:
  factors, sizes = factors_of(config), tuple(config.model.labels.sizes)
  if source.factor_space is None:
    raise errors.ConfigError(
        f"model.labels.factors = {factors!r}, but {source.name} has no ground-truth "
        "factors; for an image folder give supervision.file (a CSV of labels)")
  names = source.factor_names
  missing = [f for f in factors if f not in names]
  if missing:
    raise errors.ConfigError(f"model.labels.factors names {', '.join(map(repr, missing))}, "
                             f"not a factor of {source.name}; valid: {', '.join(names)}")
  columns = [names.index(f) for f in factors]
  true_sizes = tuple(source.factor_sizes[c] for c in columns)
  if true_sizes != sizes:
    raise errors.ConfigError(f"model.labels.sizes = {sizes!r}; {source.name} gives "
                             f"{true_sizes!r} for {factors!r}")
  n = config.supervision.num_labelled
  if n > len(source):
    raise errors.ConfigError(f"supervision.num_labelled = {n} is more than the "
                             f"{len(source)} images of {source.name}")
  rows = labelled_rows_drawn(len(source), n, config.seed)
  table = np.full((len(source), len(factors)), -1, np.int32)
  table[rows] = source.factors_of(rows)[:, columns]
  return table


def labelled_rows_drawn(num_images: int, num_labelled: int, seed: int) -> np.ndarray:
  """The sorted rows that carry labels: drawn once from the seed."""
  rng = np.random.default_rng([seed, _LABEL_STREAM])
  return np.sort(rng.choice(num_images, num_labelled, replace=False))


def _table_from_file(config, source: Source) -> np.ndarray:
  path, factors = config.supervision.file, factors_of(config)
  named = config.supervision.value_names
  values = {f: tuple(str(v) for v in named.get(f, ())) for f in factors}
  sizes = tuple(config.model.labels.sizes)
  for f, n in zip(factors, sizes):
    if len(values[f]) != n:
      raise errors.ConfigError(
          f"supervision.value_names.{f} = {values[f]!r} has {len(values[f])} values, "
          f"model.labels.sizes says {n}; list each value of {f} in code order")
  files = getattr(source, "files", None)
  if files is None:
    raise errors.ConfigError(f"supervision.file is for image folders; {source.name} has "
                             "ground-truth factors: leave supervision.file empty")
  rows = {os.path.relpath(p, source.path): i for i, p in enumerate(files)}
  try:
    with open(path, newline="") as f:
      reader = csv.reader(f)
      header = next(reader, None)
      table = np.full((len(files), len(factors)), -1, np.int32)
      columns = _header_columns(path, header, factors)
      seen = set()
      for line, row in enumerate(reader, start=2):
        _read_row(path, line, row, header, columns, values, rows, table, seen)
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise LabelsFileError(f"labels file {path!r} cannot be read: {e}") from None
  if not (table >= 0).any():
    raise LabelsFileError(f"labels file {path!r} labels no image")
  return table


def _header_columns(path, header, factors) -> list[int]:
  if not header or "file" not in header:
    raise LabelsFileError(f"labels file {path!r}: the first row must name the columns, "
                          f"one of them `file`; got {header!r}")
  unknown = [c for c in header if c != "file" and c not in factors]
  if unknown:
    raise LabelsFileError(f"labels file {path!r}: column(s) {', '.join(map(repr, unknown))} "
                          f"are not in model.labels.factors {factors!r}")
  missing = [f for f in factors if f not in header]
  if missing:
    raise LabelsFileError(f"labels file {path!r} has no column for factor(s) "
                          f"{', '.join(map(repr, missing))}")
  return [header.index(f) for f in factors]


def _read_row(path, line, row, header, columns, values, rows, table, seen) -> None:
  where = f"labels file {path!r} row {line}"
  if len(row) != len(header):
    raise LabelsFileError(f"{where}: {len(row)} cells, the header has {len(header)}")
  name = row[header.index("file")]
  if name not in rows:
    raise LabelsFileError(f"{where}: file {name!r} is not an image of the folder "
                          "(paths are relative to data.dir)")
  if name in seen:
    raise LabelsFileError(f"{where}: file {name!r} is labelled twice")
  seen.add(name)
  for k, (factor, column) in enumerate(zip(values, columns)):
    cell = row[column].strip()
    if not cell:
      continue
    if cell not in values[factor]:
      raise LabelsFileError(f"{where}: {factor} = {cell!r}; valid: "
                            f"{', '.join(values[factor])} or empty (unknown)")
    table[rows[name], k] = values[factor].index(cell)


class WithLabels(Source):
  """`source` with `labels` (k,) int32 (-1 unknown) on every example, over
  `rows` of it (all rows when None)."""

  def __init__(self, source: Source, table: np.ndarray, rows=None):
    self.source, self.table = source, table
    self.rows = np.arange(len(source)) if rows is None else np.asarray(rows)
    self.name, self.image_shape = source.name, source.image_shape
    self.factor_space = source.factor_space

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, index):
    return {k: v[0] for k, v in self.__getitems__([index]).items()}

  def __getitems__(self, indices):
    rows = self.rows[np.asarray(indices)]
    out = self.source.__getitems__(rows)
    out["labels"] = self.table[rows]
    return out


def build_pipelines(config, source: Source, table: np.ndarray, mesh):
  """(the pipeline of all images with their labels, the pipeline of the
  labelled images), both sharded over `mesh`."""
  b = labelled_batch_size(config, mesh.size)
  if b % mesh.size:
    raise errors.ConfigError(f"supervision.batch_size = {b} does not divide over the "
                             f"{mesh.size} devices of the mesh; use a multiple of {mesh.size}")
  labelled = np.flatnonzero((table >= 0).any(axis=1))
  if b > len(labelled):
    raise errors.ConfigError(f"supervision.batch_size = {b} is more than the {len(labelled)} "
                             "labelled images")
  everything = data.build_pipeline(config, WithLabels(source, table), mesh)
  few = InputPipeline(
      WithLabels(source, table, labelled),
      BatchPlan(len(labelled), b, seed=config.seed + _LABEL_STREAM, shuffle=True,
                hflip=config.data.hflip),
      sharding=parallel.batch_sharding(mesh), num_threads=1, prefetch=config.data.prefetch)
  return everything, few


def step_inputs(batch: dict, labelled: dict | None) -> dict:
  """What the train step takes from the batches of a step (the region maps
  too, where the batch has them: config.subspaces)."""
  out = {k: batch[k] for k in ("image", "region") if k in batch}
  if labelled is not None:
    out.update(labels=batch["labels"], labelled_image=labelled["image"],
               labelled_labels=labelled["labels"])
  return out
