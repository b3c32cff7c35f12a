"""TFDS datasets through `tfds.data_source`: random access, no TensorFlow needed
for reading (preparing the files once does need it).

Ground-truth datasets expose their `label_*` features as our factors, in the
order of the published arrays. TFDS shuffles records when it prepares a
dataset, so `index_of` / `factors_of` go through a table of every record's
factors, built on first use by reading the labels once and cached as .npy.
"""

import dataclasses
import hashlib
import logging
import os

import numpy as np
from PIL import Image

from cldis_jax import errors
from cldis_jax.data.source import (DatasetNotFoundError, FactorSpace, Source,
                                   check_channels, check_resolution, resize,
                                   resize_and_crop)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald",
    "Bangs", "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry",
    "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee",
    "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young")


@dataclasses.dataclass(frozen=True)
class _Spec:
  native: int  # side of the images we produce at most
  channels: int
  factors: tuple[tuple[str, str, int], ...] = ()  # (our name, tfds feature, size)
  pixel_scale: int = 1  # dsprites stores 0/1 pixels


SPECS = {
    "shapes3d": _Spec(64, 3, (("floor_hue", "label_floor_hue", 10),
                              ("wall_hue", "label_wall_hue", 10),
                              ("object_hue", "label_object_hue", 10),
                              ("scale", "label_scale", 8),
                              ("shape", "label_shape", 4),
                              ("orientation", "label_orientation", 15))),
    "dsprites": _Spec(64, 1, (("shape", "label_shape", 3),
                              ("scale", "label_scale", 6),
                              ("orientation", "label_orientation", 40),
                              ("x", "label_x_position", 32),
                              ("y", "label_y_position", 32)), pixel_scale=255),
    # disentanglement_lib's order; the left camera's image. Use split
    # "train+test" for all 48,600 combinations (each split holds 5 instances).
    "smallnorb": _Spec(96, 1, (("category", "label_category", 5),
                               ("instance", "instance", 10),
                               ("elevation", "label_elevation", 9),
                               ("azimuth", "label_azimuth", 18),
                               ("lighting", "label_lighting", 6))),
    "celeb_a": _Spec(128, 3),  # 218 x 178 photos, cropped (see celeba_crop)
}

# CelebA crops: "tad" is the NashAE / DisDiff / EncDiff recipe used for TAD
# (torchvision Resize(1.5 s) then CenterCrop(s); s = 64 gives 96 then 64);
# "d2c" is Diff-AE's CelebA64 box (128 x 128 centred at x=89, y=121), resized.
CELEBA_CROPS = ("tad", "d2c")
_CELEBA_MAX = {"tad": 118, "d2c": 128}


def _how_to_get(name: str, data_dir) -> str:
  where = data_dir or "~/tensorflow_datasets"
  return (f"Prepare it once where TensorFlow is installed (pip install tensorflow-cpu): "
          f"`tfds build {name} --data_dir={where} --file_format=array_record`, then set "
          f"config.data.dir to that directory.")


class TfdsSource(Source):
  """A TFDS dataset read with `as_data_source`, resized to `resolution`."""

  def __init__(self, name: str, *, resolution: int, split: str = "train",
               data_dir: str | None = None, channels: int | None = None,
               celeba_crop: str = "tad", cache_dir: str | None = None):
    import tensorflow_datasets as tfds  # heavy: only when a TFDS source is asked for
    if name not in SPECS:
      raise errors.ConfigError(f"TFDS dataset {name!r} is not supported; valid: {', '.join(SPECS)}")
    self.spec = SPECS[name]
    self.name, self.split, self.resolution = f"tfds/{name}", split, resolution
    self.celeba_crop = celeba_crop
    if name == "celeb_a":
      if celeba_crop not in CELEBA_CROPS:
        raise errors.ConfigError(f"celeba_crop {celeba_crop!r} is not one of {CELEBA_CROPS}")
      check_resolution(f"tfds/celeb_a with the {celeba_crop!r} crop", resolution,
                       _CELEBA_MAX[celeba_crop])
    else:
      check_resolution(self.name, resolution, self.spec.native,
                       " The procedural sources render any resolution.")
    check_channels(self.name, self.spec.channels if channels is None else channels,
                   (self.spec.channels,))
    self.image_shape = (resolution, resolution, self.spec.channels)
    self.attribute_names = CELEBA_ATTRIBUTES if name == "celeb_a" else ()
    if self.spec.factors:
      self.factor_space = FactorSpace(tuple(f[0] for f in self.spec.factors),
                                      tuple(f[2] for f in self.spec.factors))

    builder = tfds.builder(name, data_dir=data_dir)
    try:
      self._data = builder.as_data_source(split=split)
    except Exception as error:  # pylint: disable=broad-except
      if builder.is_prepared():
        raise
      raise DatasetNotFoundError(
          f"TFDS dataset {name!r} (split {split!r}) is not prepared under "
          f"{builder.data_dir}. {_how_to_get(name, data_dir)}") from error
    self._table_key = f"{name}-{builder.info.version}-{split}-{len(self._data)}-" + (
        hashlib.sha1(str(builder.data_dir).encode()).hexdigest()[:10])
    self._cache_dir = cache_dir
    self._factor_table = None
    self._index_table = None

  def __len__(self):
    return len(self._data)

  def __getitem__(self, index):
    example = self._data[self._check_index(index)]
    out = {"image": self._image(np.asarray(example["image"]))}
    if self.spec.factors:
      out["factors"] = self._factors(example)
    if "attributes" in example:
      out["attributes"] = np.array(
          [example["attributes"][a] for a in CELEBA_ATTRIBUTES], np.int8)
    return out

  def _factors(self, example) -> np.ndarray:
    return np.array([example[f[1]] for f in self.spec.factors], np.int64)

  def _image(self, image: np.ndarray) -> np.ndarray:
    if self.spec.pixel_scale != 1:
      image = image * np.uint8(self.spec.pixel_scale)
    if self.name != "tfds/celeb_a":
      return resize(image, self.resolution)
    if self.celeba_crop == "d2c":
      return resize(image[57:185, 25:153], self.resolution, Image.Resampling.BILINEAR)
    return resize_and_crop(image, self.resolution, short_side=round(1.5 * self.resolution))

  # Ground truth in a shuffled file: tables built once from the labels.

  def factors_of(self, index):
    index = np.asarray(index)
    table = self._factors_table()
    if ((index < 0) | (index >= len(self))).any():
      raise IndexError(f"{self.name}: index out of range 0..{len(self) - 1}")
    return table[index]

  def index_of(self, factors):
    self._factors_table()
    index = self._index_table[self._require_factors().index_of(factors)]
    if (index < 0).any():
      missing = np.asarray(factors).reshape(-1, len(self.factor_sizes))[
          np.flatnonzero(index.reshape(-1) < 0)[0]]
      raise KeyError(f"{self.name} split {self.split!r} has no record with factors "
                     f"{dict(zip(self.factor_names, missing.tolist()))}")
    return index

  def _factors_table(self) -> np.ndarray:
    if self._factor_table is not None:
      return self._factor_table
    space = self._require_factors()
    path = None
    if self._cache_dir:
      path = os.path.join(os.path.expanduser(self._cache_dir), "factor_tables",
                          self._table_key + ".npy")
    if path and os.path.exists(path):
      table = np.load(path)
    else:
      logging.info("%s: reading the labels of %d records once to index them",
                   self.name, len(self))
      table = np.stack([self._factors(self._data[i]) for i in range(len(self))])
      if path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path + ".tmp.npy", table)
        os.replace(path + ".tmp.npy", path)
    flat = space.index_of(table)
    index = np.full(len(space), -1, np.int64)
    index[flat] = np.arange(len(table))
    if np.count_nonzero(index >= 0) != len(table):
      values, counts = np.unique(flat, return_counts=True)
      raise ValueError(f"{self.name}: several records share the factors "
                       f"{space.factors_of(values[counts > 1][0]).tolist()}; the labels "
                       "do not identify records")
    self._factor_table, self._index_table = table, index
    return table

