"""What the model will see: the first training batch and, for sources with
ground truth, one row per factor sweeping its values (`--mode=data`)."""

import os
import time

import jax
import numpy as np

from cldis_jax import data, grids
from cldis_jax.data.pipeline import InputPipeline
from cldis_jax.data.source import Source


def factor_sweeps(source: Source, base_index: int = 0, columns: int = 10) -> np.ndarray:
  """[num_factors, columns, H, W, C]: row k moves factor k over evenly spaced values
  (repeating the last when it has fewer), the others fixed at `base_index`'s."""
  base = source.factors_of(base_index)
  rows = []
  for k, size in enumerate(source.factor_sizes):
    factors = np.repeat(base[None], columns, axis=0)
    factors[:, k] = np.round(np.linspace(0, size - 1, columns)).astype(int)
    rows.append(source.__getitems__(source.index_of(factors))["image"])
  return np.stack(rows)


def write_preview(source: Source, pipeline: InputPipeline, workdir: str,
                  columns: int = 8) -> list[str]:
  """Writes data_batch.png (and data_factors.png) into workdir; returns the paths."""
  batch = pipeline.local_batch(0)
  images = grids.to_uint8(batch["image"])
  count = (len(images) // columns) * columns or len(images)
  cols = min(columns, len(images))
  grid = images[:count].reshape((count // cols, cols) + images.shape[1:])
  scale = grids.scale_for(images.shape[1])
  paths = [grids.save_png(os.path.join(workdir, "data_batch.png"), grids.tile(grid), scale)]
  if source.factor_space is not None:
    sweeps = grids.tile(factor_sweeps(source))
    paths.append(grids.save_png(os.path.join(workdir, "data_factors.png"), sweeps, scale))
  return paths


def describe(config, workdir: str, timed_batches: int = 5) -> str:
  """Opens config.data as training would, times a few batches, writes the
  previews, and returns a short report."""
  source = data.source_of(config)
  pipeline = data.build_pipeline(config, source)
  lines = [f"dataset   {source.name}: {len(source):,} examples of "
           f"{'x'.join(map(str, source.image_shape))}"]
  if source.factor_space is not None:
    lines.append("factors   " + ", ".join(
        f"{n} {s}" for n, s in zip(source.factor_names, source.factor_sizes)))
  plan = pipeline.plan
  lines.append(f"batches   {plan.batch_size} global over {jax.device_count()} device(s), "
               f"{plan.steps_per_epoch:,} per epoch, shuffle {plan.shuffle}, "
               f"hflip {plan.hflip}, seed {plan.seed}")
  stream = pipeline.iterate()
  jax.block_until_ready(next(stream))
  start = time.perf_counter()
  for _ in range(timed_batches):
    jax.block_until_ready(next(stream))
  rate = timed_batches * plan.batch_size / (time.perf_counter() - start)
  stream.close()
  lines.append(f"speed     {rate:,.0f} images/s over {timed_batches} batches (after the first)")
  for path in write_preview(source, pipeline, workdir):
    lines.append(f"wrote     {path}")
  return "\n".join(lines)
