"""Parameter counts of every module, computed with `jax.eval_shape` (no allocation)."""

import math
import re

import jax

from cldis_jax import models


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def parameter_rows(tree, depth: int = 2, prefix: str = ""):
  """(indented name, count) for each submodule down to `depth` levels."""
  rows = []
  natural = lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
  for name, sub in sorted(tree.items(), key=lambda kv: natural(kv[0])):
    if not isinstance(sub, dict):
      continue  # a leaf array: counted in its parent
    rows.append((prefix + name, _count(sub)))
    if depth > 1:
      rows.extend(parameter_rows(sub, depth - 1, prefix + "  "))
  return rows


def parameter_table(model_config, depth: int = 2) -> str:
  """A table of parameter counts for the networks of `config.model`, with the total."""
  params = models.abstract_params(models.build_models(model_config))
  rows = parameter_rows(params, depth) + [("total", _count(params))]
  width = max(len(r[0]) for r in rows) + 2
  lines = [f"{'module':<{width}}{'parameters':>14}"]
  lines += [f"{name:<{width}}{count:>14,}" for name, count in rows]
  total_mb = _count(params) * 4 / 2**20
  lines.append(f"({total_mb:,.1f} MiB as float32)")
  return "\n".join(lines)
