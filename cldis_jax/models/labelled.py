"""Partially labelled factors on the Diff-AE code (ZeroDIM: Gabbay, Cohen and
Hoshen, NeurIPS 2021): the semantic code becomes [factor codes | residual].

Each labelled factor f has `sizes[f]` values, a classifier head on the
encoder's output (the encoder is the shared trunk) and an embedding table
(sizes[f] x factor_dim). An image whose value of f is known gets the row of
that value, exactly; any other image gets the classifier's softmax mix of the
rows, read through a stop-gradient, so the table learns from labelled images
only and the classifier learns through its probabilities. The residual is a
linear read-out of the encoder's output: the part of the image no label
names. Training adds Gaussian noise to it and decays it (`objective.py`).

With no label given (inference, evaluation, editing) every factor code is the
soft mix: the code a new image gets.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cldis_jax.models.layers import torch_bias_init, torch_kernel_init


class LabelledCode(nn.Module):
  sizes: Sequence[int]  # number of values of each labelled factor
  factor_dim: int = 1
  residual_dim: int = 7
  features: int = 512  # width of the encoder output the heads read
  table_std: float = 1.0  # the tables' initial rows ~ N(0, table_std^2)

  @property
  def code_dim(self) -> int:
    return len(self.sizes) * self.factor_dim + self.residual_dim

  def setup(self):
    dense = lambda n, name: nn.Dense(n, kernel_init=torch_kernel_init,
                                     bias_init=torch_bias_init(self.features), name=name)
    self.classifiers = [dense(n, f"classifier_{f}") for f, n in enumerate(self.sizes)]
    self.tables = [self.param(f"table_{f}", nn.initializers.normal(self.table_std),
                              (n, self.factor_dim))
                   for f, n in enumerate(self.sizes)]
    self.residual = dense(self.residual_dim, "residual")

  def __call__(self, features, labels=None):
    """Encoder output (B, features) and optional labels (B, k) ints, -1 where
    unknown -> dict(code (B, code_dim), factor_codes (B, k, factor_dim),
    residual (B, residual_dim), logits: k arrays (B, sizes[f]))."""
    features = features.astype(jnp.float32)
    logits = [c(features) for c in self.classifiers]
    codes = []
    for f, table in enumerate(self.tables):
      soft = jax.nn.softmax(logits[f]) @ jax.lax.stop_gradient(table)
      if labels is not None:
        known = labels[:, f] >= 0
        hard = table[jnp.maximum(labels[:, f], 0)]
        soft = jnp.where(known[:, None], hard, soft)
      codes.append(soft)
    residual = self.residual(features)
    factor_codes = jnp.stack(codes, axis=1)
    code = jnp.concatenate([factor_codes.reshape(features.shape[0], -1), residual], axis=-1)
    return dict(code=code, factor_codes=factor_codes, residual=residual, logits=logits)


def factor_slice(module: LabelledCode, f: int) -> slice:
  """Where factor f's code sits in the semantic code."""
  return slice(f * module.factor_dim, (f + 1) * module.factor_dim)


def residual_slice(module: LabelledCode) -> slice:
  return slice(len(module.sizes) * module.factor_dim, module.code_dim)
