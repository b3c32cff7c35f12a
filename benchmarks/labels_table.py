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

import seed_means

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
  print("\n".join(seed_means.header(SUMMARY) + seed_means.variant_rows(paths, "labels", SUMMARY)))


if __name__ == "__main__":
  main(*sys.argv[1:])
