"""Region maps of an image folder from a folder of label PNGs (config.data.masks).

Each image `<data.dir>/<rel>.<ext>` has a mask `<masks.dir>/<rel>.png` of the
same size holding one integer label per pixel (CelebAMask-HQ-style ids: 0
background, 1 skin, ...). `masks.regions` names the regions and
`masks.labels` gives each region's label ids, so several parts can form one
region (left and right eye -> "eyes"). Every mask is read and checked when the
folder opens: a missing file, another size than its image, or a label no
region claims stops the run with one line naming the file.
"""

import os

import numpy as np
from PIL import Image

from cldis_jax import errors
from cldis_jax.data.source import resize_and_crop

_UNCLAIMED = 255


class MaskError(errors.UserError, ValueError):
  """A mask file is missing, of the wrong size, or holds a label no region claims."""


class RegionMasks:
  """Label PNGs under `directory`, mapped to `region_names` by `labels`."""

  def __init__(self, directory: str, region_names, labels):
    region_names, labels = tuple(region_names), tuple(tuple(ids) for ids in labels)
    if not directory or not os.path.isdir(directory):
      raise errors.ConfigError(f"data.masks.dir = {directory!r} is not a directory; valid: "
                               "a folder of label PNGs named like the images")
    if not region_names or len(labels) != len(region_names):
      raise errors.ConfigError(
          f"data.masks.regions = {region_names!r}, data.masks.labels = {labels!r}; valid: "
          "region names and, for each, a tuple of the label ids it covers")
    self.directory, self.region_names = directory, region_names
    self.lookup = np.full(256, _UNCLAIMED, np.uint8)
    for region, ids in enumerate(labels):
      for label in ids:
        if not 0 <= label < _UNCLAIMED or self.lookup[label] != _UNCLAIMED:
          raise errors.ConfigError(
              f"data.masks.labels = {labels!r}: label {label} is claimed twice or is outside "
              f"0..{_UNCLAIMED - 1}")
        self.lookup[label] = region

  def path_of(self, relative_image: str) -> str:
    return os.path.join(self.directory, os.path.splitext(relative_image)[0] + ".png")

  def read(self, relative_image: str) -> np.ndarray:
    """The mask of an image as region indices at its own size, [H, W] uint8."""
    path = self.path_of(relative_image)
    if not os.path.isfile(path):
      raise MaskError(f"mask {path} of image {relative_image} does not exist; every image "
                      f"needs a label PNG of the same name under {self.directory}")
    try:
      with Image.open(path) as image:
        labels = np.asarray(image if image.mode in ("L", "P", "I", "I;16") else
                            image.convert("L"))
    except (OSError, ValueError) as error:
      raise MaskError(f"cannot read mask {path}: {error} (expected a PNG of label ids)") from error
    if labels.ndim != 2:
      raise MaskError(f"mask {path} has shape {labels.shape}; valid: one label per pixel")
    if labels.max(initial=0) >= _UNCLAIMED:
      bad = int(labels.max())
    else:
      regions = self.lookup[labels]
      unclaimed = regions == _UNCLAIMED
      if not unclaimed.any():
        return regions
      bad = int(labels[unclaimed][0])
    raise MaskError(f"mask {path} holds label {bad}, which no region of data.masks.labels "
                    f"claims; valid labels: {', '.join(map(str, np.flatnonzero(self.lookup != _UNCLAIMED)))}")

  def check(self, relative_image: str, image_path: str) -> None:
    """Reads the mask of one image and checks it against the image's size."""
    regions = self.read(relative_image)
    with Image.open(image_path) as image:
      width, height = image.size
    if regions.shape != (height, width):
      raise MaskError(f"mask {self.path_of(relative_image)} is {regions.shape[1]}x"
                      f"{regions.shape[0]}, its image {relative_image} is {width}x{height}; "
                      "valid: the same size")

  def load(self, relative_image: str, resolution: int) -> np.ndarray:
    """Region indices [resolution, resolution] uint8, cropped like the image
    (nearest neighbour, so no label is blended)."""
    regions = self.read(relative_image)[..., None]
    return resize_and_crop(regions, resolution, resample=Image.Resampling.NEAREST)[..., 0]
