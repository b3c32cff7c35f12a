"""Independent subspaces of the semantic code, each tied to an image region
(config.subspaces; docs/subspaces.md).

The first dims of z_sem are split into named blocks (`blocks`, `sizes`), the
rest left free. Two losses join the eps loss in the training step:

- the swap loss: for `swap_pairs` images A of the batch, block k (drawn per
  pair) of A's code is replaced by the next image B's; the denoiser's eps
  prediction at A's noisy image x_t with the swapped code must not change,
  against the unswapped prediction, outside A's region of block k. Since
  x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), this is the
  change of the x0 prediction weighted by the signal-to-noise ratio abar_t /
  (1 - abar_t), bounded at every t. Optionally (`w_match`), inside the pixels
  that are region k in both A and B, sqrt(abar_t) x0_hat with the swapped
  code is pulled to sqrt(abar_t) x0_B (the signal part of x_t, so again
  bounded at every t);
- an independence loss between the blocks over the batch: "hsic"
  (normalised unbiased HSIC with Gaussian kernels, bandwidths from the
  median distance; it sees nonlinear dependence) or "cross_covariance" (mean
  squared correlation between the dims of different blocks; linear only).

The method this follows (Awiszus, Ackermann and Rosenhahn, ICCV-W 2019,
arXiv 1908.08989) publishes neither its losses nor its numbers: every form
and weight here is ours.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import errors
from cldis_jax.data import shapes3d

INDEPENDENCE = ("hsic", "cross_covariance", "none")


def blocks_of(config) -> tuple[str, ...]:
  return tuple(config.subspaces.blocks)


def enabled(config) -> bool:
  return bool(blocks_of(config))


def batch_arrays(config, batch: int, num_devices: int = 1) -> dict[str, tuple[tuple, type]]:
  """The train step's batch arrays with subspaces, name -> (shape, dtype) for
  `batch` images: each image's region map (the pipeline's "region")."""
  del num_devices  # the region maps come with the batch's own images
  if not enabled(config):
    return {}
  size = config.model.image_size
  return {"region": ((batch, size, size), np.int32)}


def regions_of_blocks(config) -> tuple[str, ...]:
  """The region each block is tied to (subspaces.regions, or the block names)."""
  return tuple(config.subspaces.regions) or blocks_of(config)


def data_regions(config) -> tuple[str, ...]:
  """The region names of config.data's region maps (empty if it has none)."""
  if config.data.name == "procedural/shapes3d":
    return shapes3d.REGIONS
  if config.data.name == "folder":
    return tuple(config.data.masks.regions)
  return ()


def check(config) -> None:
  """Config checks, including that the data has every block's region.
  Nothing is checked when no block is named."""
  if not enabled(config):
    return
  s, blocks = config.subspaces, blocks_of(config)
  sizes, regions = tuple(s.sizes), regions_of_blocks(config)
  where = "config.subspaces"
  if len(set(blocks)) < len(blocks):
    raise errors.ConfigError(f"{where}.blocks = {blocks!r} names a block twice")
  if len(sizes) != len(blocks) or any(
      isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
    raise errors.ConfigError(f"{where}.sizes = {sizes!r} for blocks {blocks!r}; valid: one "
                             "integer >= 1 per block (its number of z_sem dims)")
  z_dim = config.model.diffae.z_dim
  if sum(sizes) > z_dim:
    raise errors.ConfigError(f"{where}.sizes = {sizes!r} take {sum(sizes)} dims; valid: at "
                             f"most model.diffae.z_dim = {z_dim} in all")
  if len(regions) != len(blocks):
    raise errors.ConfigError(f"{where}.regions = {regions!r}; valid: one region name per "
                             f"block of {blocks!r}, or empty (the block names)")
  if s.independence not in INDEPENDENCE:
    raise errors.ConfigError(f"{where}.independence = {s.independence!r}; valid: "
                             f"{', '.join(INDEPENDENCE)}")
  for key in ("w_swap", "w_match", "w_independence", "swap_pairs"):
    if s[key] < 0:
      raise errors.ConfigError(f"{where}.{key} = {s[key]!r}; valid: a number >= 0")
  if s.swap_pairs > config.train.batch_size:
    raise errors.ConfigError(f"{where}.swap_pairs = {s.swap_pairs}; valid: at most "
                             f"train.batch_size = {config.train.batch_size} (0: a quarter)")
  if tuple(config.model.labels.factors):
    raise errors.ConfigError(f"{where}.blocks and model.labels.factors are both set; valid: "
                             "one of them (the code is split either way)")
  region_names = data_regions(config)
  unknown = [r for r in regions if r not in region_names]
  if region_names and unknown:
    raise errors.ConfigError(f"{where}.regions: {unknown[0]!r} is not a region of "
                             f"{config.data.name}; valid: {', '.join(region_names)}")


def swap_pairs(config) -> int:
  """How many images of each batch get a block swapped in (0: a quarter)."""
  return config.subspaces.swap_pairs or max(1, config.train.batch_size // 4)


def block_bounds(sizes) -> np.ndarray:
  """(K, 2) [start, end) of each block in z_sem, from dim 0 in order."""
  ends = np.cumsum(sizes)
  return np.stack([ends - np.asarray(sizes), ends], axis=1)


def block_mask(sizes, block, code_dim: int):
  """(B, code_dim) True on the dims of each row's block (B,) ints."""
  bounds = jnp.asarray(block_bounds(sizes))[block]
  dims = jnp.arange(code_dim)
  return (dims >= bounds[:, :1]) & (dims < bounds[:, 1:])


def swap(z_a, z_b, block, sizes):
  """z_a with each row's block (B,) ints taken from the same row of z_b."""
  return jnp.where(block_mask(sizes, block, z_a.shape[-1]), z_b, z_a)


def outside_change(eps_swapped, eps_ref, outside):
  """Per-row mean over pixels and channels of (eps_swapped - eps_ref)^2
  where `outside` (B, H, W) is 1."""
  sq = jnp.sum(jnp.square(eps_swapped - eps_ref), axis=-1) * outside
  return jnp.sum(sq, axis=(1, 2)) / (outside[0].size * eps_swapped.shape[-1])


def match_error(x_t, eps_swapped, sqrt_abar, sqrt_1m_abar, x0_donor, inside):
  """Per-row mean over the `inside` pixels (B, H, W) of the squared error
  between the signal part sqrt(abar) x0_hat = x_t - sqrt(1 - abar) eps_hat
  and sqrt(abar) x0 of the donor; 0 for rows with no such pixel."""
  signal = x_t - sqrt_1m_abar[:, None, None, None] * eps_swapped
  err = jnp.sum(jnp.square(signal - sqrt_abar[:, None, None, None] * x0_donor), axis=-1)
  count = jnp.sum(inside, axis=(1, 2)) * x_t.shape[-1]
  return jnp.sum(err * inside, axis=(1, 2)) / jnp.maximum(count, 1)


def _standardise(x, eps=1e-6):
  x = x - jnp.mean(x, axis=0)
  return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=0) + eps)


def cross_correlation(a, b):
  """Mean squared correlation over the batch between each dim of a (B, p) and
  each dim of b (B, q): 0 when uncorrelated, 1 when b copies a (p = q = 1)."""
  c = _standardise(a).T @ _standardise(b) / a.shape[0]
  return jnp.mean(jnp.square(c))


def _gram(x):
  """The Gaussian kernel matrix of x (B, d) with a zero diagonal; bandwidth^2
  = the median squared distance between distinct rows (a constant for the
  gradient)."""
  n = x.shape[0]
  d2 = jnp.sum(jnp.square(x[:, None] - x[None]), axis=-1)
  off = ~np.eye(n, dtype=bool)
  bandwidth = jax.lax.stop_gradient(jnp.maximum(jnp.median(d2[off]), 1e-8))
  return jnp.where(off, jnp.exp(-d2 / bandwidth), 0.0)


def _hsic_unbiased(k, l):
  """Song et al.'s (2012) unbiased HSIC of two zero-diagonal Gram matrices."""
  n = k.shape[0]
  kl = k @ l
  return (jnp.trace(kl) + jnp.sum(k) * jnp.sum(l) / ((n - 1) * (n - 2))
          - 2.0 * jnp.sum(kl) / (n - 2)) / (n * (n - 3))


def normalised_hsic(a, b, eps=1e-12):
  """HSIC(a, b) / sqrt(HSIC(a, a) HSIC(b, b)) over the batch with Gaussian
  kernels and the unbiased estimator (so a batch of 16 independent codes
  scores ~0, not the biased estimator's ~0.4), floored at 0: 1 for copies."""
  ka, kb = _gram(a), _gram(b)
  ratio = _hsic_unbiased(ka, kb) / jnp.sqrt(
      jnp.maximum(_hsic_unbiased(ka, ka) * _hsic_unbiased(kb, kb), eps))
  return jnp.maximum(ratio, 0.0)


def dependence(z, sizes, kind: str):
  """Mean over pairs of blocks of `kind`'s dependence measure; 0 for 'none'
  or a single block."""
  if kind == "none" or len(sizes) < 2:
    return jnp.zeros((), jnp.float32)
  measure = normalised_hsic if kind == "hsic" else cross_correlation
  parts = [z[:, s:e] for s, e in block_bounds(sizes)]
  pairs = list(itertools.combinations(parts, 2))
  return sum(measure(a, b) for a, b in pairs) / len(pairs)


def swap_inputs(config, batch):
  """The static settings and the batch's region maps `subspace_terms` reads,
  or None without subspaces."""
  if not enabled(config):
    return None
  s, region_names = config.subspaces, data_regions(config)
  return dict(sizes=tuple(s.sizes), pairs=swap_pairs(config), independence=s.independence,
              w_swap=s.w_swap, w_match=s.w_match, w_independence=s.w_independence,
              block_regions=tuple(region_names.index(r) for r in regions_of_blocks(config)),
              region=batch["region"])


def subspace_terms(s, denoise, z_sem, condition, x0, x_t, t, eps_pred, process, rng):
  """The swap, match and independence terms (`s` from `swap_inputs`) for one
  batch whose eps prediction at (x_t, t) with its own code is `eps_pred`.
  `condition` maps codes to what the denoiser sees. The swapped prediction
  (one more denoiser pass on `pairs` images) is made only when a swap term
  has weight. Returns (weighted sum, terms)."""
  sizes = s["sizes"]
  terms = dict(dependence=dependence(z_sem, sizes, s["independence"]))
  loss = s["w_independence"] * terms["dependence"]
  if not (s["w_swap"] or s["w_match"]):
    return loss, terms
  n = s["pairs"]
  block = jax.random.randint(rng, (n,), 0, len(sizes))
  donor = jnp.roll(jnp.arange(x0.shape[0]), 1)[:n]  # A = row i, B = row i - 1
  z_swapped = swap(z_sem[:n], z_sem[donor], block, sizes)
  eps_swapped = denoise(x_t[:n], t[:n], condition(z_swapped))
  target_region = jnp.asarray(s["block_regions"])[block][:, None, None]
  region = s["region"]
  outside = (region[:n] != target_region).astype(jnp.float32)
  terms["swap"] = jnp.mean(outside_change(eps_swapped, jax.lax.stop_gradient(eps_pred[:n]),
                                          outside))
  loss = loss + s["w_swap"] * terms["swap"]
  if s["w_match"]:
    inside = ((region[:n] == target_region) & (region[donor] == target_region)).astype(
        jnp.float32)
    abar = jnp.asarray(process.alphas_cumprod, jnp.float32)[t[:n]]
    terms["match"] = jnp.mean(match_error(x_t[:n], eps_swapped, jnp.sqrt(abar),
                                          jnp.sqrt(1.0 - abar), x0[donor], inside))
    loss = loss + s["w_match"] * terms["match"]
  return loss, terms
