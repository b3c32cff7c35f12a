"""Unconditional samples (`--mode=sample`): `run(config, workdir)` draws
`sample.num_images` images through the latent DDIM of `--mode=train_latent`
and the autoencoder's image DDIM, and writes to `<workdir>/sample/<step>/`
(`<step>`: the autoencoder's checkpoint):

- `samples.png`, a grid of the images;
- `samples.npz`: `images` (uint8, N x H x W x C), `z_sem` (the sampled
  codes) and `x_T` (the image noise), so that any image can be decoded or
  edited again;
- `edit_<directions>.png` (`sample.edit_images` > 0): the first samples moved
  along every direction (`sample.edit_directions`: the axes of mu_s, or the
  learned directions of `--mode=navigate`), one block of rows per sample;
  the middle column is the sample itself;
- `sample.json`: the protocol (seed, counts, step counts, checkpoints).

The same seed gives the same images.
"""

import json
import os

import numpy as np

from cldis_jax import api, checks, edit, grids, trained, writer as writer_lib


def run(config, workdir: str) -> dict:
  """`--mode=sample` on `workdir`; returns what sample.json records."""
  checks.check(config)
  trained.one_process("sample")
  model = api.load(workdir, config)
  s = config.sample
  out = model.sample_all(s.num_images, s.seed)
  out_dir = os.path.join(workdir, "sample", str(model.step))
  os.makedirs(out_dir, exist_ok=True)
  scale = grids.scale_for(config.model.image_size)
  images = grids.to_uint8(out["images"])
  files = [grids.save_png(os.path.join(out_dir, "samples.png"), grids.tile(grids.square(images)), scale)]
  tmp = os.path.join(out_dir, "samples.tmp.npz")
  np.savez(tmp, images=images, z_sem=out["z_sem"], x_T=out["x_T"])
  os.replace(tmp, os.path.join(out_dir, "samples.npz"))
  files.append(os.path.join(out_dir, "samples.npz"))
  if s.edit_images:
    k = min(s.edit_images, s.num_images)
    frames = model.sample_traversals(k, edit.strengths_of(config.edit), s.edit_directions,
                                     s.seed)
    cells = frames.reshape((-1,) + frames.shape[2:])  # (k * K, F, H, W, C)
    files.append(grids.save_png(
        os.path.join(out_dir, f"edit_{s.edit_directions}.png"),
        grids.tile(grids.to_uint8(cells), marked_column=frames.shape[2] // 2), scale))
  summary = dict(files=files, step=model.step, latent_step=model.latent_step,
                 num_images=s.num_images, seed=s.seed, latent_steps=s.latent_steps,
                 image_steps=s.image_steps, edit_directions=s.edit_directions,
                 edit_strengths=edit.strengths_of(config.edit).tolist())
  writer_lib.write_atomic(os.path.join(out_dir, "sample.json"), json.dumps(summary, indent=2))
  return summary
