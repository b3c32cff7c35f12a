"""disentanglement_lib's sampling protocol over a dataset whose observations
are row indices (google-research/disentanglement_lib, `evaluation/metrics/utils.py`).

DisDiff and EncDiff encode every image of a data set once and hand the
library a data set whose observations are row indices and a representation
function that looks codes up. `GroundTruth` is that data set: it draws factor
vectors exactly as the library's `SplitDiscreteStateSpace` does (one
`random_state.randint(size_k, size=n)` per latent factor column, in factor
order) and maps them to row indices with the source's `index_of`. A
`Representation` maps row indices to codes [n, num_codes]; a lazily filled
table of the model's codes (`cldis_jax.codes.CodeTable`) and a plain numpy
table give the same numbers, because the codes are deterministic.

Array layout here is points-first ([num_points, num_codes], [num_points,
num_factors]); the library's is dims-first.
"""

import dataclasses
from typing import Callable, Sequence

import numpy as np

Representation = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Factor sizes (all factors of the source, in order) and the index map.

  Factors with a single value (dSprites' colour) are not latent: they are
  never sampled and are not scored, as in the library, whose draw for such a
  factor (`randint(1)`) consumes no randomness.
  """
  sizes: tuple[int, ...]
  index_of: Callable[[np.ndarray], np.ndarray]
  names: tuple[str, ...] = ()

  @classmethod
  def of(cls, source) -> "GroundTruth":
    space = getattr(source, "factor_space", None)
    if space is None:
      raise ValueError(f"{getattr(source, 'name', source)!r} has no ground-truth factors; "
                       "the supervised metrics need a source with a factor_space")
    return cls(tuple(int(s) for s in space.sizes), source.index_of, tuple(space.names))

  @property
  def latent(self) -> tuple[int, ...]:
    return tuple(k for k, n in enumerate(self.sizes) if n > 1)

  @property
  def num_factors(self) -> int:
    return len(self.latent)

  @property
  def latent_names(self) -> tuple[str, ...]:
    names = self.names or tuple(f"factor_{k}" for k in range(len(self.sizes)))
    return tuple(names[k] for k in self.latent)

  def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
    """[num, num_factors] latent factor classes, drawn column by column."""
    factors = np.zeros((num, self.num_factors), np.int64)
    for pos, k in enumerate(self.latent):
      factors[:, pos] = random_state.randint(self.sizes[k], size=num)
    return factors

  def indices_of(self, factors: np.ndarray) -> np.ndarray:
    """Row indices of latent factor vectors (single-valued factors are 0)."""
    full = np.zeros(factors.shape[:-1] + (len(self.sizes),), np.int64)
    full[..., list(self.latent)] = factors
    return np.asarray(self.index_of(full), np.int64)

  def sample(self, num: int, random_state) -> tuple[np.ndarray, np.ndarray]:
    """(factors [num, num_factors], row indices [num])."""
    factors = self.sample_factors(num, random_state)
    return factors, self.indices_of(factors)


def table_representation(codes: np.ndarray) -> Representation:
  """A representation that looks rows of a [num_images, num_codes] table up."""
  codes = np.asarray(codes)
  return lambda indices: codes[np.asarray(indices)]


def generate_batch_factor_code(ground_truth: GroundTruth, representation: Representation,
                               num_points: int, random_state,
                               batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """`utils.generate_batch_factor_code`: (codes [N, D], factors [N, K]).

  The draws happen in chunks of `batch_size`, as in the library, so that the
  random stream (and hence every number) matches it; the encoding is one
  batched lookup afterwards.
  """
  factors, indices = [], []
  for start in range(0, num_points, batch_size):
    f, i = ground_truth.sample(min(batch_size, num_points - start), random_state)
    factors.append(f)
    indices.append(i)
  factors, indices = np.concatenate(factors), np.concatenate(indices)
  return np.asarray(representation(indices)), factors


def check_codes_factors(codes: np.ndarray, factors: np.ndarray, metric: str,
                        min_codes: int = 1, names: Sequence[str] = ()) -> tuple:
  """Validates [N, D] codes and [N, K] integer factors; names what is wrong."""
  codes, factors = np.asarray(codes), np.asarray(factors)
  if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
    raise ValueError(f"{metric}: codes must be [num_points, num_codes] and factors "
                     f"[num_points, num_factors]; got {codes.shape} and {factors.shape}")
  if codes.shape[1] < min_codes:
    raise ValueError(f"{metric} needs at least {min_codes} code dimensions, got "
                     f"{codes.shape[1]}")
  if not np.all(np.isfinite(codes)):
    raise ValueError(f"{metric}: the codes contain NaN or inf "
                     f"({int(np.sum(~np.isfinite(codes)))} values)")
  for k in range(factors.shape[1]):
    if len(np.unique(factors[:, k])) < 2:
      name = names[k] if k < len(names) else f"factor {k}"
      raise ValueError(f"{metric}: {name} takes a single value in these "
                       f"{len(factors)} points, so it carries no information to score; "
                       "drop it (GroundTruth leaves single-valued factors out)")
  return codes, factors
