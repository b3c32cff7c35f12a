"""A folder of photos (FFHQ, CelebA-HQ, your own): png / jpg files found
recursively, in sorted path order, each resized (short side) and centre-cropped
to the configured resolution."""

import logging
import os
import threading

import numpy as np
from PIL import Image

from cldis_jax.data.source import (DatasetNotFoundError, Source, check_channels,
                                   resize_and_crop)

EXTENSIONS = (".png", ".jpg", ".jpeg")
BAD_IMAGE_POLICIES = ("raise", "skip")


class CorruptImageError(OSError):
  """An image file in a folder cannot be decoded."""


class ImageFolder(Source):
  """`on_bad_image="raise"` stops at the first unreadable file, naming it;
  `"skip"` logs it, counts it in `skipped`, and returns the next readable image
  in path order instead, so batches keep their size and stay deterministic."""

  def __init__(self, path: str, *, resolution: int, channels: int = 3,
               on_bad_image: str = "raise"):
    check_channels(f"image folder {path}", channels, (1, 3))
    if on_bad_image not in BAD_IMAGE_POLICIES:
      raise ValueError(f"on_bad_image {on_bad_image!r} is not one of {BAD_IMAGE_POLICIES}")
    if not path or not os.path.isdir(path):
      raise DatasetNotFoundError(
          f"image folder {path!r} does not exist. Put the images (png or jpg, any "
          "size; FFHQ, CelebA-HQ or your own photos) in a directory and set "
          "config.data.dir to it.")
    self.files = sorted(
        os.path.join(root, name) for root, _, names in os.walk(path, followlinks=True)
        for name in names if name.lower().endswith(EXTENSIONS))
    if not self.files:
      raise DatasetNotFoundError(f"image folder {path!r} holds no {'/'.join(EXTENSIONS)} "
                                 "files (searched recursively)")
    self.name, self.path = f"folder:{path}", path
    self.resolution, self.on_bad_image = resolution, on_bad_image
    self.image_shape = (resolution, resolution, channels)
    self.skipped: set[str] = set()
    self._lock = threading.Lock()

  def __len__(self):
    return len(self.files)

  def __getitem__(self, index):
    index = self._check_index(index)
    for offset in range(len(self.files)):
      path = self.files[(index + offset) % len(self.files)]
      try:
        return {"image": self.load(path)}
      except CorruptImageError as error:
        if self.on_bad_image == "raise":
          raise CorruptImageError(f"{error}. Remove the file, or set "
                                  "config.data.on_bad_image='skip' to skip such files.")
        self._note_skipped(path, error)
    raise DatasetNotFoundError(f"no image under {self.path!r} could be read")

  def load(self, path: str) -> np.ndarray:
    """One file -> uint8 resolution x resolution x channels."""
    return load_image(path, self.resolution, self.image_shape[-1])

  def _note_skipped(self, path, error):
    with self._lock:
      if path not in self.skipped:
        self.skipped.add(path)
        logging.warning("skipping unreadable image %s (%s); %d skipped so far",
                        path, error, len(self.skipped))


def load_image(path: str, resolution: int, channels: int = 3) -> np.ndarray:
  """One image file of any size -> uint8 resolution x resolution x channels
  (short side resized, centre-cropped). A missing path is a FileNotFoundError
  and an unreadable one a CorruptImageError, each naming the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image {path!r} does not exist"
                            + (" (it is a directory)" if os.path.isdir(path) else ""))
  try:
    with Image.open(path) as image:
      image = image.convert("RGB" if channels == 3 else "L")
      array = np.asarray(image)
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise CorruptImageError(f"cannot read image {path}: {error} (expected a png or jpg "
                            "file)") from error
  if array.ndim == 2:
    array = array[..., None]
  return resize_and_crop(array, resolution)
