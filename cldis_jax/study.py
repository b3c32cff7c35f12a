"""The study program (`--mode=study`): a grid of variants x seeds, each trained
and evaluated the same way, summarised with mean +- std over seeds.

A study config is an ordinary experiment config (the base every run starts
from) plus a `study` section:

- `variants`: name -> overrides of the base config (nested, as
  `config_lib.nested` builds them from dotted keys);
- `seeds`: every variant runs once per seed (`config.seed`);
- `only`: variant names to run now (empty: all);
- `shard`: "i/n" runs only every n-th run starting at i, so n processes on one
  study directory share the grid (each writes only its own runs; every
  process rewrites the summary from all the runs on disk).

Run r of variant v with seed s lives in `<workdir>/runs/<v>/seed<s>/`, a
normal training workdir: `--mode=evaluate`, navigate and edit work on it.
After training, the run is evaluated with the config's `evaluate` section
(the same protocol for every run; where `evaluate.every` made training
evaluate its last step, that evaluation is kept) and `result.json` is
written there last;
a run with a `result.json` is finished and is skipped when the study is run
again, one without resumes from its checkpoints. A run that raises is
recorded (`failed.json`, with the error) and the others go on; it is tried
again the next time the study runs.

After every run, `<workdir>/results.json` (every number of every run),
`results.md` (mean +- std per metric x representation x variant) and the
plots `training.png` (beta, the controller's signal and set point and each
loss term over training, one line per variant) and `metrics.png` (metric
bars with seed error bars) are rewritten from what is on disk.
"""

import json
import os
import time
import traceback

from absl import logging
import numpy as np

from cldis_jax import (checks, config_lib, errors, eval_report, evaluate, loop, study_report, train,
                       writer as writer_lib)

RESULT, FAILED = "result.json", "failed.json"
# The training curves kept for each run (the TensorBoard tags).
CURVES = ("beta", "controller_signal", "controller_setpoint", "loss", "loss_diff", "loss_vae",
          "vae_nll", "vae_kl", "loss_dt", "loss_dt_mean", "diff_info")


def runs_of(config) -> list[tuple[str, int]]:
  """(variant, seed) of every run, variant-major, in the config's order."""
  s = config.study
  if not s.variants:
    raise errors.ConfigError("study.variants is empty: name at least one variant "
                             "(a name and its config overrides; {} is the base config)")
  return [(name, int(seed)) for name in s.variants for seed in s.seeds]


def _shard(spec: str) -> tuple[int, int]:
  if not spec:
    return 0, 1
  try:
    i, n = (int(x) for x in spec.split("/"))
  except ValueError:
    i, n = -1, 0
  if not 0 <= i < n:
    raise errors.ConfigError(
        f"study.shard = {spec!r}; valid: '' (all runs) or 'i/n' with 0 <= i < n")
  return i, n


def run_config(config, variant: str, seed: int):
  """The config of one run: the base without `study`, the variant's overrides, the seed."""
  overrides = config.study.variants[variant].to_dict()
  out = config_lib.apply_overrides(config, overrides, where=f"study.variants.{variant}")
  out.study = config_lib.base_config().study
  out.seed = seed
  return out


def run_dir(workdir: str, variant: str, seed: int) -> str:
  return os.path.join(workdir, "runs", variant, f"seed{seed}")


def _curves(directory: str) -> dict[str, list[list[float]]]:
  scalars = writer_lib.read_scalars(directory)
  return {tag: [[step, value] for step, value in scalars[tag]]
          for tag in CURVES if tag in scalars}


class Preempted(Exception):
  """Training stopped by SIGTERM: the study stops too (the run resumes next time)."""


def _evaluated_in_training(metrics: dict, directory: str) -> dict | None:
  """The evaluation training wrote at its last step (`evaluate.every`), of the
  EMA weights `evaluate.run` would restore, or None: never evaluated twice."""
  step = metrics["step"]
  path = os.path.join(directory, "eval", str(step), "metrics.json")
  if metrics.get("evaluation", {}).get("step") != step or not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def train_and_score(config, directory: str) -> dict:
  """Trains one run (resuming), evaluates it, returns its result record."""
  t0 = time.perf_counter()
  metrics = train.train_and_evaluate(config, directory)
  if metrics["status"] != "completed":
    raise Preempted(f"training in {directory} stopped at step {metrics['step']}")
  t1 = time.perf_counter()
  summary = _evaluated_in_training(metrics, directory) or evaluate.run(config, directory)
  t2 = time.perf_counter()
  return dict(
      status="completed", step=summary["step"], train=metrics.get("train", {}),
      controller=metrics.get("controller", {}), metrics=eval_report.headline(summary),
      curves=_curves(directory), train_seconds=t1 - t0, evaluate_seconds=t2 - t1,
      evaluation=os.path.join(directory, "eval", str(summary["step"]), "metrics.json"))


def selected_runs(config) -> list[tuple[str, int]]:
  """The runs this process owns (`study.only`, then `study.shard`), after
  checking every run's config, so that nothing trains if one is bad."""
  config_lib.check_config(config)
  runs = runs_of(config)
  for variant, seed in runs:
    checks.check(run_config(config, variant, seed))
  only = tuple(config.study.only)
  unknown = [v for v in only if v not in config.study.variants]
  if unknown:
    raise errors.ConfigError(f"study.only names {unknown}, which are not variants; valid: "
                             f"{', '.join(config.study.variants)}")
  index, count = _shard(config.study.shard)
  mine = [r for r in runs if not only or r[0] in only]
  return [r for i, r in enumerate(mine) if i % count == index]


def run(config, workdir: str) -> dict:
  """`--mode=study`: runs every unfinished run of this shard, then returns
  the summary (also written to `workdir`)."""
  runs, mine = runs_of(config), selected_runs(config)
  os.makedirs(workdir, exist_ok=True)
  todo = [r for r in mine if not os.path.exists(os.path.join(run_dir(workdir, *r), RESULT))]
  logging.info("study: %d runs (%d variants x %d seeds), %d in this shard, %d to do",
               len(runs), len(config.study.variants), len(config.study.seeds), len(mine),
               len(todo))
  spent = []
  for n, (variant, seed) in enumerate(todo):
    eta = (f", ETA {loop.format_eta(np.mean(spent) * (len(todo) - n))}" if spent else "")
    logging.info("study: run %d/%d: %s, seed %d%s", n + 1, len(todo), variant, seed, eta)
    directory = run_dir(workdir, variant, seed)
    os.makedirs(directory, exist_ok=True)
    start = time.perf_counter()
    record = dict(variant=variant, seed=seed, directory=directory)
    try:
      record.update(train_and_score(run_config(config, variant, seed), directory))
      if os.path.exists(os.path.join(directory, FAILED)):
        os.remove(os.path.join(directory, FAILED))
      writer_lib.write_atomic(os.path.join(directory, RESULT), json.dumps(record, indent=1))
    except Preempted as e:
      logging.warning("study: %s; stopping (run the study again to resume)", e)
      break
    except Exception as e:  # pylint: disable=broad-except
      logging.error("study: run %s seed %d failed: %s", variant, seed, e)
      record.update(status="failed", error=f"{type(e).__name__}: {e}",
                    traceback=traceback.format_exc())
      writer_lib.write_atomic(os.path.join(directory, FAILED), json.dumps(record, indent=1))
    spent.append(time.perf_counter() - start)
    study_report.write(config, workdir, collect(config, workdir))
  results = collect(config, workdir)
  return study_report.write(config, workdir, results)


def collect(config, workdir: str) -> list[dict]:
  """The records on disk of every run of the study (finished or failed), in order."""
  out = []
  for variant, seed in runs_of(config):
    directory = run_dir(workdir, variant, seed)
    for name in (RESULT, FAILED):
      path = os.path.join(directory, name)
      if os.path.exists(path):
        with open(path) as f:
          out.append(json.load(f))
        break
  return out
