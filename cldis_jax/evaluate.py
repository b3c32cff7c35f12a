"""Evaluation: every metric the dataset supports, for every representation.

`evaluate_params(config, models, params, source, out_dir, step)` is what both
`--mode=evaluate` (`run(config, workdir)`, on the latest checkpoint's EMA
weights) and the training loop (every `evaluate.every` steps) call. It writes
`<out_dir>/metrics.json`, a readable `metrics.txt` table and one traversal
grid per representation, and returns the results.

- Supervised metrics (sources with ground-truth factors): disentanglement_lib's
  protocol, each metric from its own RandomState(0), observations are row
  indices into the encoded data set (`cldis_jax.metrics.protocol`).
- TAD (sources with binary attributes, e.g. CelebA): one random batch of
  `evaluate.tad.num_images`, in each variant listed (`metrics.tad`).
- CTD (any source): traversals decoded from `evaluate.ctd.num_sources` real
  images along each direction of the representation, out to
  +-range_sigma std of that coordinate (`metrics.ctd`).
- factor_response (sources with ground-truth factors): on the same
  traversals, how far a CNN probe's prediction of each factor moves along each
  direction (`metrics.factor_probe`).
- labels / subspaces (runs with labelled factors / with subspaces): their own
  columns (`labelled_eval`, `subspace_eval`).
- autoencoding (any source): images decoded from their own code with fresh
  noise and from their inverted x_T, read by the factor oracle, and where in t
  the denoiser reads the code (`autoencoding_eval`).

`--mode=evaluate` on a workdir where `--mode=navigate` has run also scores
the learned directions ("navigation") with the traversal metrics, next to the
representations' own axes.
"""

import dataclasses
import os
import time
from typing import Any, Callable, NamedTuple

from absl import logging
import numpy as np

from cldis_jax import (autoencoding_eval, checkpoint, codes as codes_lib, data, diffusion,
                       errors, eval_report, fid, generation_eval, grids, inference,
                       labelled_eval, latent, models as models_lib, navigation, subspace_eval,
                       trained)
from cldis_jax.metrics import (beta_vae, ctd, dci, factor_probe, factor_vae, mig, modularity,
                               protocol, sap, tad)

SUPERVISED = ("factor_vae", "beta_vae", "mig", "dci", "sap", "modularity")
TRAVERSAL = ("ctd", "factor_response")  # computed on decoded traversals


@dataclasses.dataclass(frozen=True)
class Inputs:
  """What an evaluation column reads."""
  config: Any
  models: Any
  params: Any
  source: Any
  ground_truth: Any  # protocol.GroundTruth, or None without ground-truth factors
  generator: Any  # the latent DDIM (latent.load_generator), or None
  out_dir: str


class Column(NamedTuple):
  """An evaluation column of its own (not one number per representation)."""
  what: str  # for the log
  applies: Callable[[Inputs], bool]  # whether this run has the column at all
  why_unavailable: Callable[[Inputs], str | None]  # why it cannot be computed; None: it can
  reads_factors: Callable[[Inputs], bool]  # whether it needs the factor oracle (the probe)
  run: Callable[[Inputs, Any], dict]  # (inputs, the probe or None) -> its results


def _always(_: Inputs) -> bool:
  return True


def _no_factors(i: Inputs) -> str | None:
  return None if i.ground_truth is not None else f"{i.source.name} has no ground-truth factors"


def _no_generator(i: Inputs) -> str | None:
  if i.generator is None:
    return "no latent DDIM: run --mode=train_latent on the workdir first"
  return None


# Each column: its own module, computed only for the runs it applies to and
# listed under `skipped` with why where it applies but cannot be computed.
COLUMNS = {
    # ZeroDIM's protocol for runs with labelled factors (labelled_eval.py).
    "labels": Column(
        "the labelled factors (ZeroDIM's protocol)", lambda i: i.models.labels is not None,
        _no_factors, _always, lambda i, probe: labelled_eval.evaluate_labels(
            i.config, i.models, i.params, i.source, probe)),
    # Swaps and dependence for runs with subspaces (subspace_eval.py).
    "subspaces": Column(
        "the subspaces (swaps and dependence)", lambda i: bool(i.config.subspaces.blocks),
        lambda i: None,
        lambda i: bool(i.config.subspaces.factors) and i.ground_truth is not None,
        lambda i, probe: subspace_eval.evaluate_subspaces(i.config, i.models, i.params,
                                                          i.source, probe)),
    # The latent DDIM's samples read by the factor oracle (generation_eval.py).
    "generation": Column(
        "the latent DDIM's samples (the factor oracle's reading)", _always,
        lambda i: _no_factors(i) or _no_generator(i), _always,
        lambda i, probe: generation_eval.evaluate_generation(
            i.config, i.models, i.params, i.source, probe, i.generator)),
    # Images decoded from their own code and fresh noise (autoencoding_eval.py).
    "autoencoding": Column(
        "autoencoding from the code (fresh noise and inverted)", _always, lambda i: None,
        lambda i: i.ground_truth is not None,
        lambda i, probe: autoencoding_eval.evaluate_autoencoding(
            i.config, i.models, i.params, i.source, probe, i.out_dir)),
    # Diff-AE's FID protocol, sampling and autoencoding (fid.py).
    "fid": Column(
        "FID (Diff-AE's protocol)", _always, lambda i: fid.unavailable(i.config.evaluate.fid),
        lambda i: False,
        lambda i, probe: fid.evaluate_fid(i.config, i.models, i.params, i.source, i.generator,
                                          os.path.join(os.path.dirname(i.out_dir),
                                                       "fid_reference"))),
}
METRICS = SUPERVISED + ("tad",) + TRAVERSAL + tuple(COLUMNS)


def _supervised(name, ground_truth, representation, e):
  """One library metric from a fresh RandomState(0), at the config's sizes."""
  rs = np.random.RandomState(0)
  if name == "factor_vae":
    return factor_vae.compute_factor_vae(
        ground_truth, representation, rs, batch_size=e.group_batch_size,
        num_train=e.num_train, num_eval=e.num_test,
        num_variance_estimate=e.num_variance_estimate, prune_threshold=e.prune_threshold)
  if name == "beta_vae":
    return beta_vae.compute_beta_vae(ground_truth, representation, rs,
                                     batch_size=e.group_batch_size, num_train=e.num_train,
                                     num_eval=e.num_test, solver=e.logistic_solver)
  sizes = dict(num_train=e.num_train, batch_size=e.code_batch_size)
  if name == "mig":
    return mig.compute_mig(ground_truth, representation, rs, num_bins=e.num_bins, **sizes)
  if name == "dci":
    return dci.compute_dci(ground_truth, representation, rs, num_test=e.num_test,
                           workers=e.dci_workers, **sizes)
  if name == "sap":
    return sap.compute_sap(ground_truth, representation, rs, num_test=e.num_test,
                           dual=e.svm_dual, **sizes)
  if name == "modularity":
    return modularity.compute_modularity_explicitness(
        ground_truth, representation, rs, num_test=e.num_test, num_bins=e.num_bins,
        solver=e.logistic_solver, **sizes)
  raise errors.ConfigError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}")


def _has_attributes(source) -> bool:
  return "attributes" in source[0]


def _tad(table, source, rep, t) -> dict:
  rows = np.sort(np.random.RandomState(0).choice(
      len(source), min(t.num_images, len(source)), replace=False))
  labels = np.stack([source[int(i)]["attributes"] for i in rows]).astype(np.int64)
  if labels.min() < 0:  # CelebA stores -1 / 1
    labels = (labels + 1) // 2
  names = getattr(source, "attribute_names", ())
  codes = table.representation(rep)(rows)
  return {variant: tad.tad(codes, labels, variant=variant, names=names,
                           auroc_threshold=t.auroc_threshold,
                           entropy_threshold=t.entropy_threshold, range_min=t.range_min)
          for variant in t.variants}


def _strengths(config, sigma) -> np.ndarray:
  """(K, 2S+1): from -range_sigma * sigma_k to +range_sigma * sigma_k, 0 in the middle."""
  c = config.evaluate.ctd
  unit = np.linspace(-1.0, 1.0, 2 * c.steps + 1, dtype=np.float32)
  return c.range_sigma * np.asarray(sigma, np.float32)[:, None] * unit[None, :]


def _direction_frames(models, config, params, x0, directions, sigma):
  """[N, K, 2S+1, H, W, C] in [-1, 1]: z_sem along each direction out to
  +-range_sigma * sigma, decoded by DDIM from each source's inverted x_T."""
  process = diffusion.process(config.diffusion, config.diffusion.sample_steps)
  return inference.diffae_traversals(models, process, params, x0, np.asarray(directions),
                                     _strengths(config, sigma))


def _traversal_frames(models, config, params, table, rep, x0):
  """[N, K, 2S+1, H, W, C] in [-1, 1] along each direction of `rep`."""
  if rep == "vae_mu":
    return inference.vae_traversals(models, params, x0, _strengths(config, table.scale(rep)))
  directions = (models_lib.mu_directions(models, params) if rep == "mu_s"
                else np.asarray(table.pca_components, np.float32))
  return _direction_frames(models, config, params, x0, directions, table.scale(rep))


def _traversal_metrics(config, frames, rep, wanted, probe, out_dir) -> dict:
  """CTD and / or the factor response of traversal frames; the grid of the first source."""
  frames = np.asarray(frames)
  path = grids.save_grid(os.path.join(out_dir, f"traverse_{rep}.png"), frames[0])
  out = {}
  if "ctd" in wanted:
    unit = (np.clip(frames, -1.0, 1.0) + 1.0) / 2.0
    if unit.shape[-1] == 1:
      unit = np.repeat(unit, 3, axis=-1)
    # deterministic decoders: the minimum floor
    out["ctd"] = dict(ctd.ctd(unit, None, ctd.CTDParams.from_config(config.evaluate.ctd)),
                      grid=path)
  if "factor_response" in wanted:
    out["factor_response"] = dict(
        factor_probe.summarize(factor_probe.factor_response(probe, frames), probe.names),
        probe_accuracy=probe.accuracy, grid=path)
  return out


def _train_probe(config, source):
  p = config.evaluate.probe
  logging.info("training the factor probe (%d steps)", p.steps)
  return factor_probe.train_probe(source, steps=p.steps, batch_size=p.batch_size,
                                  learning_rate=p.learning_rate, width=p.width,
                                  test_images=p.test_images, seed=config.evaluate.seed)


def _check_request(e) -> None:
  unknown = [m for m in e.metrics if m not in METRICS]
  if unknown:
    raise errors.ConfigError(f"evaluate.metrics has unknown {unknown}; valid: {', '.join(METRICS)}")
  for rep in e.representations:
    if rep not in codes_lib.REPRESENTATIONS:
      raise errors.ConfigError(f"evaluate.representations has {rep!r}; valid: "
                               f"{', '.join(codes_lib.REPRESENTATIONS)}")


def _skipped(metrics, source, ground_truth) -> dict[str, str]:
  """The requested metrics the source cannot give, each with why."""
  no_factors = f"{source.name} has no ground-truth factors"
  skipped = {}
  for m in metrics:
    if m in SUPERVISED + ("factor_response",) and ground_truth is None:
      skipped[m] = no_factors
    if m == "tad" and not _has_attributes(source):
      skipped[m] = f"{source.name} has no binary attributes"
  return skipped


class _Clock:
  """Wall time per phase, less any encoding the phase triggered (timed apart)."""

  def __init__(self, table):
    self.table, self.seconds = table, {}

  def __call__(self, label, fn):
    start, encoding = time.perf_counter(), self.table.encode_seconds
    out = fn()
    self.seconds[label] = time.perf_counter() - start - (self.table.encode_seconds - encoding)
    logging.info("%s took %.1f s", label, self.seconds[label])
    return out


def evaluate_params(config, models, params, source, out_dir: str, step: int,
                    writer=None, directions=None, unavailable=None, generator=None) -> dict:
  """Evaluates EMA `params` on `source`; writes metrics.json, metrics.txt and
  traversal PNGs into `out_dir`; returns the results. `directions` maps a
  name to (z_sem directions (K, z_dim), std along each (K,)), scored with the
  traversal metrics only (the learned navigation directions); `unavailable`
  maps a name to why it could not be evaluated (listed under `skipped`);
  `generator` is the latent DDIM (`latent.load_generator`) the `generation`
  column samples from."""
  e = config.evaluate
  _check_request(e)
  os.makedirs(out_dir, exist_ok=True)
  start = time.perf_counter()
  table = codes_lib.CodeTable(source, models, params, batch_size=e.encode_batch,
                              reference_images=e.reference_images, seed=e.seed,
                              representations=e.representations)
  if e.encode_all:
    table.encode_all()
  ground_truth = protocol.GroundTruth.of(source) if source.factor_space else None
  skipped = {**_skipped(e.metrics, source, ground_truth), **(unavailable or {})}
  timed = _Clock(table)
  wanted = [m for m in TRAVERSAL if m in e.metrics and m not in skipped]
  inputs = Inputs(config, models, params, source, ground_truth, generator, out_dir)
  columns = []
  for name, column in COLUMNS.items():
    if name in e.metrics and name not in skipped and column.applies(inputs):
      why = column.why_unavailable(inputs)
      if why:
        skipped[name] = why
      else:
        columns.append(name)
  oracle = "factor_response" in wanted or any(COLUMNS[c].reads_factors(inputs) for c in columns)
  probe = timed("probe", lambda: _train_probe(config, source)) if oracle else None
  x0 = data.images_at(source, table.reference[:e.ctd.num_sources])

  def traversals(name, frames_fn):
    logging.info("evaluating %s on %s traversals", ", ".join(wanted), name)
    return timed(f"traversals of {name}", lambda: _traversal_metrics(
        config, frames_fn(), name, wanted, probe, out_dir))

  results = {}
  for rep in e.representations:
    results[rep] = {}
    for m in e.metrics:
      if m not in skipped and m not in TRAVERSAL + tuple(COLUMNS):
        logging.info("evaluating %s on %s", m, rep)
        results[rep][m] = timed(f"{m} on {rep}", lambda: (
            _supervised(m, ground_truth, table.representation(rep), e) if m in SUPERVISED
            else _tad(table, source, rep, e.tad)))
    if wanted:
      results[rep].update(traversals(rep, lambda: _traversal_frames(
          models, config, params, table, rep, x0)))
  for name in columns:
    logging.info("evaluating %s", COLUMNS[name].what)
    results[name] = timed(name, lambda: COLUMNS[name].run(inputs, probe))
  for name, (dirs, sigma) in (directions or {}).items():
    if wanted:
      results[name] = traversals(name, lambda: _direction_frames(
          models, config, params, x0, dirs, sigma))
  seconds = dict(timed.seconds, encode=table.encode_seconds,
                 total=time.perf_counter() - start)
  logging.info("encoding took %.1f s of the evaluation's %.1f s", seconds["encode"],
               seconds["total"])
  summary = dict(
      step=step, dataset=source.name, num_images=len(source),
      factors=list(ground_truth.latent_names) if ground_truth else None,
      images_encoded=table.encoded_images, encode_seconds=table.encode_seconds,
      protocol={k: (list(v) if isinstance(v, tuple) else v)
                for k, v in e.to_dict().items() if k not in ("tad", "ctd")},
      skipped=skipped, seconds=seconds, results=eval_report.jsonable(results))
  eval_report.write(out_dir, summary)
  if writer is not None:
    writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_report.headline(summary).items()})
  return summary


def run(config, workdir: str) -> dict:
  """`--mode=evaluate`: the latest checkpoint in `workdir`, EMA weights."""
  trained.one_process("evaluate")
  model = trained.load(workdir, config)
  out_dir = os.path.join(workdir, "eval", str(model.step))
  directions, unavailable, generator = {}, {}, None
  try:
    directions["navigation"] = navigation.directions_of(*navigation.restore(workdir))
  except errors.NoCheckpointError:
    pass  # not navigated: the traversal metrics cover the codes' axes only
  except checkpoint.CorruptCheckpointError as e:  # optional here: evaluate the rest
    logging.warning("navigation directions skipped: %s", e)
    unavailable["navigation"] = str(e)
  if {"generation", "fid"} & set(config.evaluate.metrics):
    try:
      generator = latent.load_generator(workdir, config)
    except errors.NoCheckpointError:
      pass  # reported as skipped
    except checkpoint.CorruptCheckpointError as e:
      logging.warning("the generation column skipped: %s", e)
      unavailable["generation"] = str(e)
  summary = evaluate_params(config, model.models, model.params, model.source, out_dir,
                            model.step, directions=directions, unavailable=unavailable,
                            generator=generator)
  logging.info("wrote %s/metrics.json", out_dir)
  return summary
