"""The tables and the budget curve of docs/autoencoding.md from the evaluations
kept in docs/results/autoencoding/ (one JSON per run and evaluated step: the
evaluation's `metrics.json`, with the run's training record under "run" for
the evaluation that ended the run).

  python benchmarks/autoencoding_table.py --collect STUDY_WORKDIR   # copy its evaluations in
  python benchmarks/autoencoding_table.py                           # print the tables
  python benchmarks/autoencoding_table.py --plot OUT.png            # and draw the budget curve
  python benchmarks/autoencoding_table.py --plot OUT.png --seeds 0  # of seed 0's runs only
  python benchmarks/autoencoding_table.py --plot OUT.png --variants v_weak_dt_wide_flatten

A file is named <variant>_seed<seed>_<step>.json. A run trained with
`--config.evaluate.every=N` has an evaluation every N steps, which is what
the budget curve draws.
"""

import argparse
import collections
import glob
import json
import os
import re

import numpy as np

FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
HUES = FACTORS[:3]
FOLDER = "docs/results/autoencoding"
NAME = re.compile(r"(?P<variant>.+)_seed(?P<seed>\d+)_(?P<step>\d+)\.json$")


def collect(workdir: str, folder: str) -> None:
  """Copies every evaluation of every run of a study workdir into `folder`."""
  for seed_dir in sorted(glob.glob(os.path.join(workdir, "runs", "*", "seed*"))):
    result = {}
    if os.path.exists(os.path.join(seed_dir, "result.json")):
      with open(os.path.join(seed_dir, "result.json")) as f:
        result = json.load(f)
    for path in sorted(glob.glob(os.path.join(seed_dir, "eval", "*", "metrics.json"))):
      with open(path) as f:
        evaluation = json.load(f)
      if "autoencoding" not in evaluation.get("results", {}):
        continue
      if result.get("status") == "completed" and result["step"] == evaluation["step"]:
        evaluation["run"] = dict(train_seconds=result["train_seconds"],
                                 evaluate_seconds=result["evaluate_seconds"],
                                 steps_per_s=result["train"].get("steps_per_s"),
                                 loss_diff=result["train"].get("loss_diff"))
      name = f"{os.path.basename(os.path.dirname(seed_dir))}_{os.path.basename(seed_dir)}_" \
             f"{evaluation['step']}.json"
      with open(os.path.join(folder, name), "w") as f:
        json.dump(evaluation, f, indent=1)
      print("kept", name)


def load(folder: str) -> list[dict]:
  """[{variant, seed, step, summary, numbers}] of every kept evaluation, sorted."""
  out = []
  for path in glob.glob(os.path.join(folder, "*.json")):
    match = NAME.search(os.path.basename(path))
    if match:
      with open(path) as f:
        summary = json.load(f)
      out.append(dict(variant=match["variant"], seed=int(match["seed"]),
                      step=int(match["step"]), summary=summary, numbers=numbers(summary)))
  return sorted(out, key=lambda r: (r["variant"], r["step"], r["seed"]))


def numbers(summary: dict) -> dict:
  """The headline numbers of one evaluation."""
  results = summary["results"]
  ae = results["autoencoding"]
  out = {f"fresh_{f}": ae["fresh"]["agreement"][f] for f in FACTORS}
  out.update({f"inverted_{f}": ae["inverted"]["agreement"][f] for f in FACTORS})
  out.update(fresh_mse=ae["fresh"]["mse"], inverted_mse=ae["inverted"]["mse"],
             fresh_min_hue=min(ae["fresh"]["agreement"][f] for f in HUES),
             gap=ae["code_use"]["gap"][-1],
             mig=results.get("mu_s", {}).get("mig", {}).get("discrete_mig", float("nan")))
  if "true_labels" in ae:  # a model with labelled factors
    out.update({f"labels_{f}": ae["true_labels"]["agreement"][f] for f in FACTORS})
    out["labels_mse"] = ae["true_labels"]["mse"]
    out["classifier"] = results.get("labels", {}).get("classifier", {})
  return out


def _factors(n: dict, prefix: str) -> str:
  return " / ".join(f"{n[f'{prefix}_{f}']:.2f}" for f in FACTORS)


def per_run_table(rows: list[dict]) -> list[str]:
  out = ["| run | step | fresh noise: oracle reads the input's floor / wall / object hue, "
         "scale, shape, orientation | inverted x_T: the same | MSE fresh | MSE inverted | "
         "code-use gap at t >= 900 | MIG (mu_s) | steps/s |",
         "|---|---:|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    n, rate = r["numbers"], r["summary"].get("run", {}).get("steps_per_s")
    out.append(f"| {r['variant']} seed {r['seed']} | {r['step']} | {_factors(n, 'fresh')} | "
               f"{_factors(n, 'inverted')} | {n['fresh_mse']:.3f} | {n['inverted_mse']:.4f} | "
               f"{n['gap']:.4f} | {n['mig']:.3f} | "
               f"{'–' if rate is None else f'{rate:.2f}'} |")
  return out


def labels_table(rows: list[dict]) -> list[str]:
  """Runs with labelled factors: fresh-noise decodes of the classifiers' code
  against those of the true labels' table rows, and the classifiers."""
  rows = [r for r in rows if "labels_mse" in r["numbers"]]
  out = ["| run | step | fresh noise, the classifiers' code | fresh noise, the true labels' "
         "rows | MSE (classifiers / true labels) | classifier accuracy |",
         "|---|---:|---|---|---:|---|"]
  for r in rows:
    n = r["numbers"]
    classifier = " / ".join(f"{n['classifier'][f]:.2f}" for f in FACTORS if f in n["classifier"])
    out.append(f"| {r['variant']} seed {r['seed']} | {r['step']} | {_factors(n, 'fresh')} | "
               f"{_factors(n, 'labels')} | {n['fresh_mse']:.3f} / {n['labels_mse']:.3f} | "
               f"{classifier or '–'} |")
  return out if len(out) > 2 else []


def seed_table(rows: list[dict]) -> list[str]:
  """Mean +- std over seeds, per (variant, step) with more than one seed."""
  groups = collections.defaultdict(list)
  for r in rows:
    groups[(r["variant"], r["step"])].append(r["numbers"])
  out = ["| variant | step | seeds | fresh: floor / wall / object hue | fresh: scale / shape / "
         "orientation | MSE fresh | MSE inverted | MIG (mu_s) |",
         "|---|---:|---:|---|---|---:|---:|---:|"]

  def cell(ns, keys, digits=2):
    return " / ".join(f"{np.mean([n[k] for n in ns]):.{digits}f} ± "
                      f"{np.std([n[k] for n in ns]):.{digits}f}" for k in keys)

  for (variant, step), ns in groups.items():
    if len(ns) > 1:
      out.append(f"| {variant} | {step} | {len(ns)} | "
                 f"{cell(ns, [f'fresh_{f}' for f in HUES])} | "
                 f"{cell(ns, [f'fresh_{f}' for f in FACTORS[3:]])} | "
                 f"{cell(ns, ['fresh_mse'], 3)} | {cell(ns, ['inverted_mse'], 4)} | "
                 f"{cell(ns, ['mig'], 3)} |")
  return out


def plot_budget(rows: list[dict], out: str) -> None:
  """Fresh-noise agreement per factor against training steps, one panel per
  (variant, seed) evaluated at several steps; the goals dashed."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  curves = collections.defaultdict(list)
  for r in rows:
    curves[(r["variant"], r["seed"])].append(r)
  curves = {k: v for k, v in curves.items() if len(v) > 1}
  if not curves:
    raise SystemExit("no run has evaluations at several steps: train one with "
                     "--config.evaluate.every=N and --collect it")
  fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
  for ax, ((variant, seed), rs) in zip(axes[0], sorted(curves.items())):
    steps = [r["step"] for r in rs]
    for f in FACTORS:
      ax.plot(steps, [r["numbers"][f"fresh_{f}"] for r in rs], marker="o", label=f)
    ax.axhline(0.95, color="k", ls="--", lw=0.8)
    ax.axhline(0.90, color="grey", ls=":", lw=0.8)
    ax.set(title=f"{variant}, seed {seed}", xlabel="training steps",
           ylabel="fresh-noise decodes read as the input", ylim=(0, 1.02))
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  print(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--collect", default="")
  parser.add_argument("--folder", default=FOLDER)
  parser.add_argument("--plot", default="")
  parser.add_argument("--seeds", default="", help="comma-separated seeds to plot (all if empty)")
  parser.add_argument("--variants", default="",
                      help="comma-separated variants to plot (all if empty)")
  args = parser.parse_args()
  if args.collect:
    collect(args.collect, args.folder)
    return
  rows = load(args.folder)
  print("\n".join(per_run_table(rows)))
  print()
  print("\n".join(seed_table(rows)))
  labelled = labels_table(rows)
  if labelled:
    print()
    print("\n".join(labelled))
  oracle = rows[-1]["summary"]["results"]["autoencoding"]["oracle_accuracy"] if rows else None
  if oracle:
    print("\nThe oracle's held-out accuracy on real images: "
          + " / ".join(f"{oracle[f]:.2f}" for f in FACTORS))
  if args.plot:
    seeds = {int(x) for x in args.seeds.split(",")} if args.seeds else None
    variants = set(args.variants.split(",")) if args.variants else None
    plot_budget([r for r in rows if (seeds is None or r["seed"] in seeds)
                 and (variants is None or r["variant"] in variants)], args.plot)


if __name__ == "__main__":
  main()
