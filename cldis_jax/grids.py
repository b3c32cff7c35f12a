"""Picture grids: rows x columns of images tiled with a border, saved as PNG.

`save_grid(path, cells)` is the usual route: model images in [-1, 1], cells
enlarged to at least 64 px.
"""

import os

import numpy as np
from PIL import Image

from cldis_jax import writer as writer_lib


MARK = (220, 30, 30)
MIN_CELL_PX = 64  # saved grids enlarge their cells to at least this size


def scale_for(cell_size: int) -> int:
  """The whole-number enlargement that brings `cell_size` px cells to at least
  MIN_CELL_PX (1 for cells already that large)."""
  return max(1, MIN_CELL_PX // cell_size)


def to_uint8(images) -> np.ndarray:
  """[-1, 1] -> uint8 [0, 255], rounded to the nearest level (clipped)."""
  return np.asarray(np.clip((np.asarray(images) + 1.0) * 127.5 + 0.5, 0, 255), np.uint8)


def tile(images: np.ndarray, pad: int = 2, fill: int = 255,
         marked_column: int | None = None) -> np.ndarray:
  """[rows, cols, H, W, C] uint8 -> one uint8 image with `pad` pixels between
  cells; the border around `marked_column` is drawn in red (grey for 1 channel)."""
  rows, cols, height, width, channels = images.shape
  out = np.full((rows * (height + pad) + pad, cols * (width + pad) + pad, channels),
                fill, np.uint8)
  if marked_column is not None:
    left = marked_column * (width + pad)
    out[:, left:left + width + 2 * pad] = MARK if channels == 3 else MARK[0]
  for r in range(rows):
    for c in range(cols):
      top, left = pad + r * (height + pad), pad + c * (width + pad)
      out[top:top + height, left:left + width] = images[r, c]
  return out


def square(images: np.ndarray, columns: int = 8) -> np.ndarray:
  """[N, H, W, C] -> [rows, columns, H, W, C], the last row padded with
  white cells (a grid of N images)."""
  columns = min(columns, len(images))
  rows = -(-len(images) // columns)
  pad = np.full((rows * columns - len(images),) + images.shape[1:], 255, images.dtype)
  return np.concatenate([images, pad]).reshape((rows, columns) + images.shape[1:])


def save_png(path: str, image: np.ndarray, scale: int = 1) -> str:
  """Writes a uint8 H x W x {1,3} image, optionally enlarged `scale` times."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  if scale > 1:
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
  with writer_lib.replacing(path) as tmp:  # never half a PNG
    pil.save(tmp, format="PNG")
  return path


def save_grid(path: str, cells, marked_column: int | None = None) -> str:
  """[rows, cols, H, W, C] images in [-1, 1] -> a PNG at `path`, cells enlarged
  to at least 64 px."""
  cells = np.asarray(cells)
  return save_png(path, tile(to_uint8(cells), marked_column=marked_column),
                  scale_for(cells.shape[2]))
