"""Print the tables of docs/subspaces.md from the evaluations kept in
docs/results/subspaces/ (one `metrics.json` per run, named after the run):
every run with its per-block swap numbers, then each study variant's
mean ± std over its seeds.

  python benchmarks/subspaces_table.py [docs/results/subspaces]
"""

import glob
import json
import os
import sys

import seed_means

SUMMARY = (("swap out-of-region", lambda r: r["subspaces"]["swap"]["out_of_region"]),
           ("swap target", lambda r: r["subspaces"]["swap"]["target"]),
           ("swap kept", lambda r: r["subspaces"]["swap"]["kept"]),
           ("block HSIC", lambda r: r["subspaces"]["dependence"]["hsic"]),
           ("block cross-corr", lambda r: r["subspaces"]["dependence"]["cross_covariance"]),
           ("DCI-D (mu_s)", lambda r: r["mu_s"]["dci"]["disentanglement"]),
           ("MIG (mu_s)", lambda r: r["mu_s"]["mig"]["discrete_mig"]))


def row(name: str, results: dict) -> str:
  blocks = results["subspaces"]["per_block"]
  cells = [name] + ["%.2f" % get(results) for _, get in SUMMARY]
  cells.append(" / ".join(f"{b} {v['target']:.2f}, {v['kept']:.2f}, {v['out_of_region']:.2f}"
                          for b, v in blocks.items()))
  return "| " + " | ".join(cells) + " |"


def main(folder: str = "docs/results/subspaces"):
  paths = sorted(glob.glob(os.path.join(folder, "*.json")))
  print("\nEvery run (per block: target, kept, out-of-region)\n")
  print("| run | " + " | ".join(n for n, _ in SUMMARY) + " | per block |")
  print("|" + "---|" * (len(SUMMARY) + 2))
  for path in paths:
    with open(path) as f:
      print(row(os.path.basename(path)[:-len(".json")], json.load(f)["results"]))
  print("\nEach study variant over its seeds (mean ± sample std)\n")
  rows = seed_means.variant_rows(paths, None, SUMMARY)
  print("\n".join(seed_means.header(SUMMARY) + rows))


if __name__ == "__main__":
  main(*sys.argv[1:])
