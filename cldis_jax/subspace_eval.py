"""The evaluation of a run with subspaces (config.subspaces); `evaluate.py`
reports it as the `subspaces` column.

On `evaluate.swap_images` images A drawn with evaluate.seed, each with its
own DDIM inversion, and for each block k a donor B (another of the images,
one whose factor of block k differs where `subspaces.factors` names it):

- `swap.out_of_region`: the mean squared change between A's swapped decode
  (block k from B) and A's plain reconstruction over the pixels outside A's
  region k, divided by the reconstruction's own squared error there: 0 for a
  swap that touches nothing else, 1 when it moves the rest as much as
  reconstruction already does;
- `swap.target`, `swap.kept` (sources with ground-truth factors and
  `subspaces.factors`): an oracle CNN trained on all factors of the dataset
  (`metrics.factor_probe`, evaluation only) reads the swapped image:
  `target` is how often block k's factor now reads B's true value, `kept`
  how often every other factor keeps the oracle's reading of A's
  reconstruction;
- `dependence`: both independence measures between the blocks on
  `evaluate.num_test` held-out codes (the training loss sees 16 at a time).
"""

import jax.numpy as jnp
import numpy as np

from cldis_jax import data, diffusion, inference, subspaces


def donors(factors: np.ndarray | None, rng) -> np.ndarray:
  """For each row, another row (the next one, cyclically, from a random
  shift) whose `factors` value differs where possible."""
  n = len(factors) if factors is not None else 0
  order = (np.arange(n) + rng.randint(1, max(n, 2))) % max(n, 1)
  if factors is None:
    return order
  out = order.copy()
  for i in range(n):
    for j in list(range(order[i], n)) + list(range(order[i])):
      if j != i and factors[j] != factors[i]:
        out[i] = j
        break
  return out


def outside_ratio(swapped, recon, x0, outside) -> np.ndarray:
  """Per image: mean squared (swapped - recon) over the `outside` pixels,
  over the mean squared (recon - x0) there."""
  mask = outside[..., None].astype(np.float64)
  change = np.sum(np.square(swapped - recon) * mask, axis=(1, 2, 3))
  error = np.sum(np.square(recon - x0) * mask, axis=(1, 2, 3))
  return change / np.maximum(error, 1e-12)


def evaluate_subspaces(config, models, params, source, oracle=None) -> dict:
  """The metrics of the module doc."""
  e, s = config.evaluate, config.subspaces
  names, sizes = tuple(s.blocks), tuple(s.sizes)
  regions = [subspaces.data_regions(config).index(r)
             for r in subspaces.regions_of_blocks(config)]
  rng = np.random.RandomState(e.seed)
  rows = rng.choice(len(source), e.swap_images, replace=False)
  batch = source.__getitems__(rows)
  x0 = data.to_model_range(batch["image"])
  invert_p = diffusion.process(config.diffusion, config.edit.invert_steps)
  decode_p = diffusion.process(config.diffusion, config.edit.decode_steps,
                               guidance=config.edit.guidance)
  z = inference.encode(models, params, jnp.asarray(x0))
  x_T = inference.invert(models, invert_p, params, jnp.asarray(x0), z)
  recon = np.asarray(inference.decode(models, decode_p, params, z, x_T))
  factor_of = dict(zip(names, tuple(s.factors))) if s.factors else {}
  read = (lambda x: oracle.predict_index(np.asarray(x))) if oracle is not None else None
  before = read(recon) if read else None
  bounds = subspaces.block_bounds(sizes)
  per_block, ratios, hits, kept = {}, [], [], []
  for k, name in enumerate(names):
    factor = factor_of.get(name)
    column = source.factor_names.index(factor) if factor and source.factor_space else None
    b = donors(batch["factors"][:, column] if column is not None else None, rng)
    start, stop = bounds[k]
    z_swapped = z.at[:, start:stop].set(z[b, start:stop])
    swapped = np.asarray(inference.decode(models, decode_p, params, z_swapped, x_T))
    ratio = outside_ratio(swapped, recon, x0, batch["region"] != regions[k])
    block = {"out_of_region": float(np.mean(ratio))}
    ratios.append(ratio)
    if read is not None and column is not None:
      after = read(swapped)
      col = oracle.names.index(factor)
      others = [j for j in range(len(oracle.names)) if j != col]
      hit = after[:, col] == batch["factors"][b, column]
      keep = np.all(after[:, others] == before[:, others], axis=1)
      block.update(target=float(hit.mean()), kept=float(keep.mean()))
      hits.append(hit)
      kept.append(keep)
    per_block[name] = block
  swap = {"out_of_region": float(np.mean(ratios))}
  out = dict(per_block=per_block, swap=swap, images=len(rows))
  if hits:
    swap.update(target=float(np.mean(hits)), kept=float(np.mean(kept)))
    out["oracle_accuracy"] = dict(oracle.accuracy)
  out["dependence"] = held_out_dependence(config, models, params, source)
  return out


def held_out_dependence(config, models, params, source) -> dict:
  """Both independence measures between the blocks on num_test codes."""
  e, sizes = config.evaluate, tuple(config.subspaces.sizes)
  rows = np.random.RandomState(e.seed + 1).choice(len(source), e.num_test,
                                                  replace=e.num_test > len(source))
  z = np.concatenate([np.asarray(inference.encode(models, params, jnp.asarray(
      data.images_at(source, rows[i:i + e.encode_batch]))))
                      for i in range(0, len(rows), e.encode_batch)])
  z = jnp.asarray(z[:, :int(np.sum(sizes))])
  # HSIC's Gram matrices grow with the square of the images: 2,000 at most.
  return {kind: float(subspaces.dependence(z[:2000] if kind == "hsic" else z, sizes, kind))
          for kind in ("hsic", "cross_covariance")}
