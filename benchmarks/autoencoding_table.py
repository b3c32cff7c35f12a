"""The tables of docs/autoencoding.md from the evaluations kept in
docs/results/autoencoding/ (one JSON per run: the run's `metrics.json` with
its training record under "run").

  python benchmarks/autoencoding_table.py --collect STUDY_WORKDIR   # copy its finished runs in
  python benchmarks/autoencoding_table.py                           # print the tables

A run's file is named <variant>_seed<seed>_<steps>.json.
"""

import argparse
import glob
import json
import os

FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FOLDER = "docs/results/autoencoding"


def collect(workdir: str, folder: str) -> None:
  for path in sorted(glob.glob(os.path.join(workdir, "runs", "*", "seed*", "result.json"))):
    with open(path) as f:
      result = json.load(f)
    if result.get("status") != "completed":
      continue
    with open(result["evaluation"]) as f:
      evaluation = json.load(f)
    evaluation["run"] = dict(train_seconds=result["train_seconds"],
                             evaluate_seconds=result["evaluate_seconds"],
                             steps_per_s=result["train"].get("steps_per_s"),
                             loss_diff=result["train"].get("loss_diff"))
    seed_dir = os.path.dirname(path)
    name = f"{os.path.basename(os.path.dirname(seed_dir))}_{os.path.basename(seed_dir)}_" \
           f"{result['step']}.json"
    with open(os.path.join(folder, name), "w") as f:
      json.dump(evaluation, f, indent=1)
    print("kept", name)


def _cells(ae: dict, decodes: str, key: str) -> str:
  return " / ".join(f"{ae[decodes][key][f]:.2f}" for f in FACTORS)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--collect", default="")
  parser.add_argument("--folder", default=FOLDER)
  args = parser.parse_args()
  if args.collect:
    collect(args.collect, args.folder)
    return
  print("| run | fresh noise: oracle reads the input's floor / wall / object hue, scale, shape, "
        "orientation | fresh: accuracy vs labels (same order) | inverted: agreement (same "
        "order) | MSE fresh | MSE inverted | code-use gap at t >= 900 | MIG (mu_s) | "
        "steps/s |")
  print("|---|---|---|---|---:|---:|---:|---:|---:|")
  oracle = None
  for path in sorted(glob.glob(os.path.join(args.folder, "*.json"))):
    with open(path) as f:
      summary = json.load(f)
    results, ae = summary["results"], summary["results"]["autoencoding"]
    oracle = ae["oracle_accuracy"]
    mig = results.get("mu_s", {}).get("mig", {}).get("discrete_mig", float("nan"))
    rate = summary["run"]["steps_per_s"]
    print(f"| {os.path.basename(path)[:-5]} | {_cells(ae, 'fresh', 'agreement')} | "
          f"{_cells(ae, 'fresh', 'accuracy')} | {_cells(ae, 'inverted', 'agreement')} | "
          f"{ae['fresh']['mse']:.3f} | {ae['inverted']['mse']:.4f} | "
          f"{ae['code_use']['gap'][-1]:.4f} | {mig:.3f} | {rate:.2f} |")
  if oracle:
    print("\nThe oracle's held-out accuracy on real images (last run): "
          + " / ".join(f"{oracle[f]:.2f}" for f in FACTORS))


if __name__ == "__main__":
  main()
