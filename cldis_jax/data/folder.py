"""A folder of photos (FFHQ, CelebA-HQ, your own): png / jpg files found
recursively, in sorted path order, each resized (short side) and centre-cropped
to the configured resolution.

Opening a folder scans every file's header and end (`scan`), so that a file
that is not an image, or a truncated one, stops the run at start-up (or is
skipped, with `on_bad_image="skip"`) rather than after the model compiles;
images smaller than the resolution (upscaled), with an alpha channel (dropped)
or in grayscale (made RGB) are each logged once with their count."""

import logging
import os
import threading

import numpy as np
from PIL import Image

from cldis_jax import errors
from cldis_jax.data.source import (DatasetNotFoundError, Source, check_channels,
                                   resize_and_crop)

EXTENSIONS = (".png", ".jpg", ".jpeg")
BAD_IMAGE_POLICIES = ("raise", "skip")


class CorruptImageError(errors.UserError, OSError):
  """An image file in a folder cannot be decoded."""


class ImageFolder(Source):
  """`on_bad_image="raise"` stops at the first unreadable file, naming it;
  `"skip"` logs it, counts it in `skipped`, and returns the next readable image
  in path order instead, so batches keep their size and stay deterministic."""

  def __init__(self, path: str, *, resolution: int, channels: int = 3,
               on_bad_image: str = "raise", masks=None):
    """`masks`: a `RegionMasks`, whose label maps every example then carries
    as `region` (checked for every image at start-up)."""
    check_channels(f"image folder {path}", channels, (1, 3))
    if on_bad_image not in BAD_IMAGE_POLICIES:
      raise errors.ConfigError(f"on_bad_image {on_bad_image!r} is not one of {BAD_IMAGE_POLICIES}")
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
    self.masks = masks
    self.region_names = masks.region_names if masks is not None else None
    self.scan()
    if masks is not None:
      for image_path in self.files:
        if image_path not in self.skipped:
          masks.check(self._relative(image_path), image_path)

  def scan(self) -> dict[str, int]:
    """Checks every file's header and end before training starts; returns
    (and logs) how many images will be upscaled, lose alpha, or gain colour."""
    counts = dict(upscaled=0, alpha_dropped=0, grayscale_expanded=0)
    for path in self.files:
      notes = self._read(path, lambda p: inspect_image(p, self.resolution,
                                                       self.image_shape[-1]))
      for note in notes or ():
        counts[note] += 1
    if len(self.skipped) == len(self.files):
      raise DatasetNotFoundError(f"no image under {self.path!r} could be read")
    what = dict(upscaled=f"are smaller than {self.resolution} px and will be upscaled",
                alpha_dropped="have an alpha channel, which is dropped",
                grayscale_expanded="are grayscale and will be made RGB")
    for note, count in counts.items():
      if count:
        logging.warning("%d of %d images in %s %s", count, len(self.files), self.path,
                        what[note])
    return counts

  def _read(self, path, read):
    """read(path); for a corrupt image, None if config.data.on_bad_image is
    'skip' (the file noted as skipped), else a CorruptImageError saying how
    to go on."""
    try:
      return read(path)
    except CorruptImageError as error:
      if self.on_bad_image == "raise":
        raise CorruptImageError(f"{error}. Remove the file, or set "
                                "config.data.on_bad_image='skip' to skip such files.")
      self._note_skipped(path, error)
      return None

  def __len__(self):
    return len(self.files)

  def __getitem__(self, index):
    index = self._check_index(index)
    for offset in range(len(self.files)):
      path = self.files[(index + offset) % len(self.files)]
      image = self._read(path, self.load)
      if image is None:
        continue
      example = {"image": image}
      if self.masks is not None:
        example["region"] = self.masks.load(self._relative(path), self.resolution)
      return example
    raise DatasetNotFoundError(f"no image under {self.path!r} could be read")

  def _relative(self, path: str) -> str:
    return os.path.relpath(path, self.path)

  def load(self, path: str) -> np.ndarray:
    """One file -> uint8 resolution x resolution x channels."""
    return load_image(path, self.resolution, self.image_shape[-1])

  def _note_skipped(self, path, error):
    with self._lock:
      if path not in self.skipped:
        self.skipped.add(path)
        logging.warning("skipping unreadable image %s (%s); %d skipped so far",
                        path, error, len(self.skipped))


_ENDS = {"PNG": (b"IEND\xaeB`\x82",), "JPEG": (b"\xff\xd9",)}


def inspect_image(path: str, resolution: int, channels: int = 3) -> list[str]:
  """Reads `path`'s header and last bytes (not its pixels): the conversions
  loading will make ("upscaled", "alpha_dropped", "grayscale_expanded"), or a
  CorruptImageError if it is not an image or is cut short. A file without the
  end marker of its format is decoded in full to decide."""
  try:
    with Image.open(path) as image:
      size, mode, form = image.size, image.mode, image.format
      alpha = mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    with open(path, "rb") as f:
      f.seek(max(0, os.path.getsize(path) - 16))
      tail = f.read().rstrip(b"\x00\r\n ")
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise CorruptImageError(f"cannot read image {path}: {error} (expected a png or jpg "
                            "file)") from error
  if form in _ENDS and not tail.endswith(_ENDS[form]):
    load_image(path, resolution, channels)  # raises if it really is cut short
  notes = []
  if min(size) < resolution:
    notes.append("upscaled")
  if alpha:
    notes.append("alpha_dropped")
  if channels == 3 and mode in ("1", "L", "LA", "I", "I;16", "F"):
    notes.append("grayscale_expanded")
  return notes


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
