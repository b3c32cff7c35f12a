"""Data sources and the input pipeline.

`build_source(config.data, image_size=..., channels=...)` opens the dataset a
config names, checking resolution and channels at start-up (`source_of(config)`:
at the model's size), and `build_pipeline(config, source, mesh)` batches it.
Every source is random access like `tfds.data_source`; see `source.py` for the
interface.
"""

import difflib

import ml_collections
import numpy as np

from cldis_jax import config_lib, errors, parallel
from cldis_jax.data.arrays import MPI3D, Cars3D
from cldis_jax.data.dsprites import ProceduralDSprites
from cldis_jax.data.folder import CorruptImageError, ImageFolder
from cldis_jax.data.masks import MaskError, RegionMasks
from cldis_jax.data.pipeline import BatchPlan, InputPipeline, to_model_range
from cldis_jax.data.shapes3d import ProceduralShapes3D
from cldis_jax.data.source import (DatasetNotFoundError, FactorSpace, Source,
                                   UnsupportedFormatError, check_channels)

SOURCES = ("procedural/shapes3d", "procedural/dsprites", "tfds/shapes3d", "tfds/dsprites",
           "tfds/celeb_a", "tfds/smallnorb", "folder", "mpi3d/toy", "mpi3d/realistic",
           "mpi3d/real", "cars3d")


REGION_SOURCES = ("procedural/shapes3d", "folder")  # sources that can give region maps


def build_source(data: ml_collections.ConfigDict, *, image_size: int,
                 channels: int, regions: bool = False) -> Source:
  """The source `data.name` names, giving image_size x image_size x channels
  (and with `regions`, each example's region map)."""
  config_lib.check_known_keys(data, config_lib.base_config().data.keys(), "data")
  name = data.name
  if regions and name not in REGION_SOURCES:
    raise errors.ConfigError(f"config.subspaces needs region maps, which {name} does not "
                             f"have; valid: {', '.join(REGION_SOURCES)} (a folder with "
                             "data.masks)")
  if name == "procedural/shapes3d":
    check_channels(name, channels, (3,))
    return ProceduralShapes3D(image_size, cache_mb=data.cache_mb, regions=regions)
  if name == "procedural/dsprites":
    check_channels(name, channels, (1,))
    return ProceduralDSprites(image_size, cache_mb=data.cache_mb)
  if name.startswith("tfds/") and name in SOURCES:
    from cldis_jax.data.tfds_sources import TfdsSource  # imports tensorflow_datasets
    return TfdsSource(name[len("tfds/"):], resolution=image_size, split=data.split,
                      data_dir=data.dir or None, channels=channels,
                      celeba_crop=data.celeba_crop, cache_dir=data.cache_dir)
  if name == "folder":
    masks = None
    if regions:
      if not data.masks.dir:
        raise errors.ConfigError("config.subspaces needs region maps: set data.masks.dir to "
                                 "a folder of label PNGs named like the images (and "
                                 "data.masks.regions / data.masks.labels)")
      masks = RegionMasks(data.masks.dir, data.masks.regions, data.masks.labels)
    return ImageFolder(data.dir, resolution=image_size, channels=channels,
                       on_bad_image=data.on_bad_image, masks=masks)
  if name.startswith("mpi3d/") and name in SOURCES:
    return MPI3D(data.dir, variant=name[len("mpi3d/"):], resolution=image_size,
                 channels=channels)
  if name == "cars3d":
    return Cars3D(data.dir, resolution=image_size, channels=channels,
                  cache_mb=data.cache_mb)
  close = difflib.get_close_matches(name, SOURCES, n=3, cutoff=0.4)
  raise errors.ConfigError(f"data.name {name!r} is not a dataset"
                           + (f" (did you mean {', '.join(close)}?)" if close else "")
                           + f"; valid: {', '.join(SOURCES)}")


def source_of(config) -> Source:
  """The source of `config.data` at the model's image size and channels, with
  region maps when config.subspaces names blocks."""
  return build_source(config.data, image_size=config.model.image_size,
                      channels=config.model.in_channels,
                      regions=bool(tuple(config.subspaces.blocks)))


def images_at(source: Source, rows) -> np.ndarray:
  """The images of `rows` (N,) in [-1, 1], float32 (N, H, W, C)."""
  return to_model_range(source.__getitems__(np.asarray(rows))["image"])


def spread_rows(num_rows: int, count: int) -> np.ndarray:
  """`count` row indices spread evenly over 0..num_rows-1."""
  return np.linspace(0, num_rows - 1, min(count, num_rows)).astype(np.int64)


def spread_images(source: Source, count: int) -> np.ndarray:
  """`count` fixed images spread evenly over the source, in [-1, 1] (previews,
  and the images `--mode=edit` takes when given no files)."""
  return images_at(source, spread_rows(len(source), count))


def build_pipeline(config: ml_collections.ConfigDict, source: Source,
                   mesh=None) -> InputPipeline:
  """Global batches of config.train.batch_size, sharded over `mesh`'s data axis."""
  mesh = mesh if mesh is not None else parallel.data_mesh()
  parallel.check_batch_divides(config.train.batch_size, mesh)
  plan = BatchPlan(len(source), config.train.batch_size, seed=config.seed,
                   shuffle=config.data.shuffle, hflip=config.data.hflip)
  return InputPipeline(source, plan, sharding=parallel.batch_sharding(mesh),
                       num_threads=config.data.num_threads, prefetch=config.data.prefetch)


__all__ = ["REGION_SOURCES", "SOURCES", "BatchPlan", "Cars3D", "CorruptImageError",
           "DatasetNotFoundError", "FactorSpace", "ImageFolder", "InputPipeline", "MPI3D",
           "MaskError", "ProceduralDSprites", "ProceduralShapes3D", "RegionMasks", "Source", "UnsupportedFormatError", "build_pipeline",
           "build_source", "images_at", "source_of", "spread_images", "spread_rows",
           "to_model_range"]
