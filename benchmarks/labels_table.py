"""Print the partial-labels results tables of docs/labels.md from the
evaluations kept in docs/results/labels/ (one `metrics.json` per run, named
after the run): every run, then each study variant's mean ± std over its
seeds.

  python benchmarks/labels_table.py [docs/results/labels]
"""

import glob
import json
import os
import sys

import numpy as np

COLUMNS = ("run", "DCI-D", "DCI-I", "MIG", "classifier acc. (per factor)",
           "residual probe on labelled (chance ~0.10)", "edit target", "edit kept")


def row(name: str, labels: dict) -> str:
  acc = labels["classifier"]
  factors = [k for k in acc if k != "mean"]
  probe = labels["residual_probe"]["factors"]
  cells = (name, "%.2f" % labels["dci"]["disentanglement"],
           "%.2f" % labels["dci"]["informativeness_test"], "%.2f" % labels["mig"]["discrete_mig"],
           "%.2f (%s)" % (acc["mean"], " / ".join("%.2f" % acc[f] for f in factors)),
           " / ".join("%.2f" % probe[f]["accuracy"] for f in factors),
           "%.2f" % labels["edit"]["target"], "%.2f" % labels["edit"]["kept"])
  return "| " + " | ".join(cells) + " |"


SUMMARY = (("DCI-D", lambda l: l["dci"]["disentanglement"]),
           ("DCI-I", lambda l: l["dci"]["informativeness_test"]),
           ("MIG", lambda l: l["mig"]["discrete_mig"]),
           ("classifier acc.", lambda l: l["classifier"]["mean"]),
           ("residual leak", lambda l: l["residual_probe"]["labelled_excess"]),
           ("edit target", lambda l: l["edit"]["target"]),
           ("edit kept", lambda l: l["edit"]["kept"]))


def variant_means(paths) -> list[str]:
  """One row per study variant: the mean ± sample std over its seeds of each
  SUMMARY value."""
  by_variant = {}
  for path in paths:
    name = os.path.basename(path)[:-len(".json")]
    if name.startswith("study_"):
      variant = name[len("study_"):].rsplit("_seed", 1)[0]
      with open(path) as f:
        by_variant.setdefault(variant, []).append(json.load(f)["results"]["labels"])
  rows = []
  for variant, runs in sorted(by_variant.items()):
    cells = [f"{variant} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"]
    for _, get in SUMMARY:
      values = np.array([get(r) for r in runs])
      cells.append(f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1
                   else f"{values[0]:.2f}")
    rows.append("| " + " | ".join(cells) + " |")
  return rows


def main(folder: str = "docs/results/labels"):
  paths = sorted(glob.glob(os.path.join(folder, "*.json")))
  for title, prefix_is_study in (("The study's runs (study_<variant>_seed<k>)", True),
                                 ("Screening", False)):
    print(f"\n{title}\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for path in paths:
      name = os.path.basename(path)[:-len(".json")]
      if name.startswith("study_") == prefix_is_study:
        with open(path) as f:
          print(row(name, json.load(f)["results"]["labels"]))
  print("\nEach study variant over its seeds (mean ± sample std)\n")
  print("| variant | " + " | ".join(n for n, _ in SUMMARY) + " |")
  print("|" + "---|" * (len(SUMMARY) + 1))
  print("\n".join(variant_means(paths)))


if __name__ == "__main__":
  main(*sys.argv[1:])
