"""ZeroDIM's evaluation of partially labelled codes (avivga/zerodim,
`evaluation/`), on codes and factors given as arrays:

- `block_dci`: DCI of the factor codes against the labelled factors, where
  each factor's code is a block of `factor_dim` dims and the tree importances
  are summed within a block (K blocks x K factors).
- `classifier_accuracy`: how often each classifier's argmax is the value.
- `residual_probe`: standardised features and a logistic regression (80/20
  split) from the residual to each factor, with the accuracy a constant guess
  of the training part's most frequent value gets (chance). Near chance on a labelled factor:
  the residual does not carry it; high on an unlabelled one: the residual keeps
  what the labels do not name.
"""

import numpy as np
from sklearn import linear_model, model_selection, pipeline, preprocessing

from cldis_jax.metrics import dci as dci_lib

_PROBE_SEED = 1337  # ZeroDIM's split seed


def block_importance(importance: np.ndarray, factor_dim: int) -> np.ndarray:
  """R [K * factor_dim, F] -> R [K, F] summed within each block of factor_dim rows."""
  dims, factors = importance.shape
  return importance.reshape(dims // factor_dim, factor_dim, factors).sum(axis=1)


def block_dci(codes_train, factors_train, codes_test, factors_test, factor_dim: int,
              workers: int = 0) -> dict:
  """codes [N, K * factor_dim] (factor blocks in order), factors [N, K]."""
  importance, train_acc, test_acc = dci_lib.importance_matrix(
      codes_train, factors_train, codes_test, factors_test, workers)
  blocks = block_importance(importance, factor_dim)
  d, c = dci_lib.disentanglement_completeness(blocks)
  return {"disentanglement": d, "completeness": c,
          "informativeness_train": float(train_acc.mean()),
          "informativeness_test": float(test_acc.mean()),
          "importance_matrix": blocks.tolist()}


def classifier_accuracy(logits, factors, names) -> dict:
  """logits: one [N, size] array per factor; factors [N, K] -> {name: accuracy}."""
  return {name: float(np.mean(np.argmax(l, axis=-1) == factors[:, k]))
          for k, (name, l) in enumerate(zip(names, logits))}


def residual_probe(residual, factors, names) -> dict:
  """{name: {"accuracy", "chance"}}: logistic regression from the residual
  [N, R] to each factor of factors [N, F], scored on a held-out 20%."""
  out = {}
  for k, name in enumerate(names):
    y = factors[:, k]
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        residual, y, test_size=0.2, random_state=_PROBE_SEED)
    probe = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                   linear_model.LogisticRegression(max_iter=1000))
    probe.fit(x_train, y_train)
    values, counts = np.unique(y_train, return_counts=True)
    out[name] = {"accuracy": float(probe.score(x_test, y_test)),
                 "chance": float(np.mean(y_test == values[np.argmax(counts)]))}
  return out
