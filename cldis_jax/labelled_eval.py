"""The evaluation of a run with labelled factors (`model.labels`), ZeroDIM's
protocol next to ours; `evaluate.py` reports it as the `labels` column.

On `num_train + num_test` images drawn with evaluate.seed, encoded with no
label given (the code a new image gets):

- `dci`, `mig`, `sap`: the factor codes against the labelled factors (DCI
  with each factor's block of importances summed; MIG and SAP on the
  concatenated factor codes), disentanglement_lib's estimators;
- `classifier`: each classifier's accuracy on those images, and the mean;
- `residual_probe`: a logistic regression from the residual to every factor
  of the dataset; `labelled_excess` is the largest accuracy above chance on a
  labelled factor (0: the residual does not carry them);
- `edit`: on `evaluate.labels_edit_images` images, each labelled factor set to
  a random other value (the table row), decoded from the image's DDIM
  inversion; an oracle CNN trained on all labels of the dataset
  (`metrics.factor_probe`, evaluation only) reads the result: `target` is how
  often the factor took the requested value, `kept` how often every other
  factor kept the value the oracle read on the unedited reconstruction.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import data, diffusion, inference, models as models_lib
from cldis_jax.metrics import labelled as labelled_metrics, mig, sap
from cldis_jax.models.labelled import factor_slice


@functools.partial(jax.jit, static_argnums=0)
def _parts(models, params, x0):
  p = models_lib.semantic_parts(models, params, x0)
  return p["factor_codes"].reshape(len(x0), -1), p["residual"], p["logits"]


def encode_parts(models, params, source, rows, batch_size: int):
  """(factor codes [N, K * factor_dim], residuals, logits per factor) of `rows`."""
  out = [_parts(models, params, jnp.asarray(data.images_at(source, rows[i:i + batch_size])))
         for i in range(0, len(rows), batch_size)]
  cat = lambda j: np.concatenate([np.asarray(o[j]) for o in out])
  logits = [np.concatenate([np.asarray(o[2][f]) for o in out]) for f in range(len(out[0][2]))]
  return cat(0), cat(1), logits


def evaluate_labels(config, models, params, source, oracle=None) -> dict:
  """The metrics of the module doc; `edit` only with an `oracle` probe."""
  e, names = config.evaluate, tuple(config.model.labels.factors)
  columns = [source.factor_names.index(n) for n in names]
  n = e.num_train + e.num_test
  rows = np.random.RandomState(e.seed).choice(len(source), n, replace=n > len(source))
  fcodes, residual, logits = encode_parts(models, params, source, rows, e.encode_batch)
  factors = source.factors_of(rows)
  y = factors[:, columns]
  train, test = slice(0, e.num_train), slice(e.num_train, None)
  out = {"dci": labelled_metrics.block_dci(fcodes[train], y[train], fcodes[test], y[test],
                                           models.labels.factor_dim, e.dci_workers)}
  if fcodes.shape[1] >= 2:
    out["mig"] = mig.mig(fcodes[train], y[train], e.num_bins)
  out["sap"] = sap.sap(fcodes[train], y[train], fcodes[test], y[test], dual=e.svm_dual)
  accuracy = labelled_metrics.classifier_accuracy(logits, y, names)
  out["classifier"] = dict(accuracy, mean=float(np.mean(list(accuracy.values()))))
  multi = [k for k, s in enumerate(source.factor_sizes) if s > 1]
  probe = labelled_metrics.residual_probe(residual, factors[:, multi],
                                          [source.factor_names[k] for k in multi])
  out["residual_probe"] = dict(
      factors=probe, labelled_excess=max(probe[n]["accuracy"] - probe[n]["chance"]
                                         for n in names))
  if oracle is not None:
    out["edit"] = edit_accuracy(config, models, params, source, oracle, rows)
  return out


def edit_accuracy(config, models, params, source, oracle, rows) -> dict:
  """`target` and `kept` of the module doc, over every labelled factor."""
  names, count = tuple(config.model.labels.factors), config.evaluate.labels_edit_images
  x0 = jnp.asarray(data.images_at(source, rows[:count]))
  invert_p = diffusion.process(config.diffusion, config.edit.invert_steps)
  decode_p = diffusion.process(config.diffusion, config.edit.decode_steps,
                               guidance=config.edit.guidance)
  code = inference.encode(models, params, x0)
  x_T = inference.invert(models, invert_p, params, x0, code)
  read = lambda x: oracle.predict_index(np.asarray(x))
  before = read(inference.decode(models, decode_p, params, code, x_T))
  rng = np.random.RandomState(config.evaluate.seed)
  hits, kept, per_factor = [], [], {}
  for f, name in enumerate(names):
    col, size = oracle.names.index(name), models.labels.sizes[f]
    targets = (before[:, col] + rng.randint(1, size, len(x0))) % size  # another value
    table = params["labels"][f"table_{f}"]
    edited = code.at[:, factor_slice(models.labels, f)].set(table[targets])
    after = read(inference.decode(models, decode_p, params, edited, x_T))
    others = [j for j in range(len(oracle.names)) if j != col]
    hit = after[:, col] == targets
    keep = np.all(after[:, others] == before[:, others], axis=1)
    per_factor[name] = {"target": float(hit.mean()), "kept": float(keep.mean())}
    hits.append(hit)
    kept.append(keep)
  return dict(per_factor=per_factor, target=float(np.mean(hits)), kept=float(np.mean(kept)),
              oracle_accuracy=dict(oracle.accuracy), images=len(x0))
