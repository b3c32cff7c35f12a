"""Editing real images (`--mode=edit`): invert, move z_sem, decode, write grids.

Images come from `config.edit.images` (or `--images`), else
`edit.dataset_images` images spread over the config's dataset. Each is
encoded to z_sem and inverted to x_T by DDIM (`edit.invert_steps`); z_sem moves
along each direction (`edit.directions`: the learned ones of
`--mode=navigate`, or the axes of mu_s through the head's pseudo-inverse) over
`edit.num_strengths` strengths in [-strength, strength] std, and is decoded by
DDIM from the same x_T (`edit.decode_steps`). Written to
`<workdir>/edit/<step>/`:

- `<directions>_<k>.png`, one per direction: rows = images; the first column
  is the input, then one column per strength; the strength-0 column (the plain
  reconstruction) is framed in red;
- with `edit.directions = "labels"` (a run with labelled factors) instead
  `labels_<factor>.png`, one per labelled factor (`edit.which`: their
  indices): the input, the reconstruction (framed), then the factor set to
  each of its values in order, everything else kept;
- with `edit.directions = "swaps"` (a run with subspaces) instead
  `swap_<block>.png`, one per block (`edit.which`: their indices): a matrix
  whose top row holds the donors and left column the images, and whose cell
  (i, j) is image i with the block's code from image j (the diagonal: the
  reconstructions);
- `interpolation.png` (with two images or more): rows = pairs (0, 1), (2, 3),
  ...; the inputs at both ends, between them z_sem interpolated linearly and
  x_T spherically;
- `edit.json`: the files, images, strengths and per-direction std.
"""

import json
import os

from absl import logging
import numpy as np

from cldis_jax import api, checks, data, errors, grids, trained, writer as writer_lib

EDITS = api.KINDS + ("labels", "swaps")  # what edit.directions takes


def strengths_of(edit_config) -> np.ndarray:
  n = edit_config.num_strengths
  if n < 1 or n % 2 == 0:
    raise errors.ConfigError(f"edit.num_strengths={n} must be odd, so that strength 0 (the "
                             "reconstruction) is the middle column")
  return np.linspace(-edit_config.strength, edit_config.strength, n, dtype=np.float32)


def direction_grid(inputs, frames) -> np.ndarray:
  """inputs (N, H, W, C), frames (N, F, H, W, C) in [-1, 1] -> uint8 grid, the
  middle frame column framed."""
  cells = np.concatenate([np.asarray(inputs)[:, None], frames], axis=1)
  return grids.tile(grids.to_uint8(cells), marked_column=1 + frames.shape[1] // 2)


def run(config, workdir: str) -> dict:
  """`--mode=edit` on `workdir`'s latest training checkpoint."""
  checks.check(config)
  trained.one_process("edit")
  e = config.edit
  if e.directions not in EDITS:
    raise errors.ConfigError(f"edit.directions {e.directions!r} is not one of {EDITS}")
  if e.directions == "labels" and not config.model.labels.factors:
    raise errors.ConfigError("edit.directions = 'labels' needs a run with labelled factors "
                             "(model.labels.factors is empty)")
  if e.directions == "swaps" and not config.subspaces.blocks:
    raise errors.ConfigError("edit.directions = 'swaps' needs a run with subspaces "
                             "(config.subspaces.blocks is empty)")
  strengths = strengths_of(e)
  names = list(e.images)
  files = api.load_images(names, config) if names else None  # checked before anything else
  model = api.load(workdir, config)
  x = files if names else model.images(count=e.dataset_images)
  if not names:
    rows = data.spread_rows(len(model.source), e.dataset_images)
    names = [f"{config.data.name}[{i}]" for i in rows]
  out_dir = os.path.join(workdir, "edit", str(model.step))
  scale = grids.scale_for(config.model.image_size)
  if e.directions == "labels":
    files, summary = _label_edits(config, model, x, out_dir, scale)
  elif e.directions == "swaps":
    files, summary = _swap_edits(config, model, x, out_dir, scale)
  else:
    files, summary = _direction_edits(config, model, x, strengths, out_dir, scale)
  if e.interpolation_steps and len(x) >= 2:
    pairs = len(x) // 2
    a, b = x[0:2 * pairs:2], x[1:2 * pairs:2]
    mixed = model.interpolate(a, b, np.linspace(0.0, 1.0, e.interpolation_steps))
    cells = np.concatenate([a[:, None], mixed, b[:, None]], axis=1)
    files.append(grids.save_grid(os.path.join(out_dir, "interpolation.png"), cells))
  summary = dict(summary, step=model.step, directions=e.directions, images=names,
                 invert_steps=e.invert_steps, decode_steps=e.decode_steps, files=files)
  writer_lib.write_atomic(os.path.join(out_dir, "edit.json"), json.dumps(summary, indent=2))
  logging.info("wrote %d grids to %s", len(files), out_dir)
  return summary


def _direction_edits(config, model, x, strengths, out_dir, scale):
  """One grid per direction: (files, what edit.json records of them)."""
  e = config.edit
  directions, sigma = model.directions(e.directions)
  which = list(e.which) or list(range(len(directions)))
  frames = model.traverse(x, strengths, e.directions, which)
  files = [grids.save_png(os.path.join(out_dir, f"{e.directions}_{k:02d}.png"),
                          direction_grid(x, frames[:, j]), scale)
           for j, k in enumerate(which)]
  return files, dict(which=which, strengths=strengths.tolist(),
                     sigma=[float(sigma[k]) for k in which])


def value_names(config, factor: str, size: int) -> list[str]:
  """A labelled factor's values as the labels file names them, else 0..size-1."""
  named = config.supervision.value_names.get(factor) if config.supervision.file else None
  return [str(v) for v in named] if named else [str(v) for v in range(size)]


def _label_edits(config, model, x, out_dir, scale):
  """One grid per labelled factor: input, reconstruction (framed), each value."""
  which = list(config.edit.which) or list(range(len(model.factors)))
  recon = model.reconstruct(x)[:, None]
  files, values = [], {}
  for f in which:
    name = model.factors[model.factor_index(f)]
    size = len(model.factor_table(name))
    frames = np.concatenate([recon, model.set_factor(x, name, range(size))], axis=1)
    cells = np.concatenate([np.asarray(x)[:, None], frames], axis=1)
    files.append(grids.save_png(os.path.join(out_dir, f"labels_{name}.png"),
                                grids.tile(grids.to_uint8(cells), marked_column=1), scale))
    values[name] = value_names(config, name, size)
  return files, dict(which=which, values=values)


def swap_grid(x, swapped) -> np.ndarray:
  """Images x (N, H, W, C) and swapped (N, N, H, W, C) in [-1, 1] -> uint8
  grid: donors across the top, images down the left, a blank corner."""
  x = np.asarray(x)
  top = np.concatenate([np.ones_like(x[:1]), x])[None]
  rows = np.concatenate([x[:, None], swapped], axis=1)
  return grids.tile(grids.to_uint8(np.concatenate([top, rows])))


def _swap_edits(config, model, x, out_dir, scale):
  """One swap matrix per block of the code."""
  which = list(config.edit.which) or list(range(len(model.blocks)))
  files = []
  for k in which:
    name = model.blocks[model.block_index(k)]
    files.append(grids.save_png(os.path.join(out_dir, f"swap_{name}.png"),
                                swap_grid(x, model.swap(x, x, name)), scale))
  return files, dict(which=which, blocks=[model.blocks[k] for k in which])
