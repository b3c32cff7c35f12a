"""Mean ± sample std over seeds of a study's kept evaluations: the files
`study_<variant>_seed<k>.json` in a results folder (one `metrics.json` per
run). Used by the results-table scripts."""

import json
import os

import numpy as np


def study_variant(path: str):
  """The variant of a kept study run's file, or None for other files."""
  name = os.path.basename(path)[:-len(".json")]
  if not name.startswith("study_"):
    return None
  return name[len("study_"):].rsplit("_seed", 1)[0]


def variant_rows(paths, column, summary) -> list[str]:
  """One markdown row per study variant: `summary` is (name, getter) pairs,
  each getter reading one number from a run's `results[column]` (from all of
  `results` when `column` is None)."""
  by_variant = {}
  for path in paths:
    variant = study_variant(path)
    if variant is not None:
      with open(path) as f:
        results = json.load(f)["results"]
      by_variant.setdefault(variant, []).append(results if column is None else results[column])
  return rows_of(by_variant, summary)


def rows_of(by_variant: dict, summary) -> list[str]:
  """The rows of variant_rows from runs already read: variant -> results."""
  rows = []
  for variant, runs in sorted(by_variant.items()):
    cells = [f"{variant} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"]
    for _, get in summary:
      values = np.array([get(r) for r in runs])
      cells.append(f"{values.mean():.2f} ± {values.std(ddof=1):.2f}" if len(values) > 1
                   else f"{values[0]:.2f}")
    rows.append("| " + " | ".join(cells) + " |")
  return rows


def header(summary) -> list[str]:
  return ["| variant | " + " | ".join(n for n, _ in summary) + " |",
          "|" + "---|" * (len(summary) + 1)]
