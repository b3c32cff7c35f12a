"""Print the co-pilots study's tables for docs/copilots.md from the
evaluations kept in docs/results/copilots/ (`study_<variant>_seed<k>.json`,
one `metrics.json` per run): each variant's mean ± std over its seeds, then,
per co-pilot and metric, whether `mu_s` in the loop beats the co-pilot
trained alone (its own means, `vae_mu`): the gap of the means against the
pooled std sqrt((s1^2 + s2^2) / 2), the test of docs/study.md.

  python benchmarks/copilots_table.py [docs/results/copilots]
"""

import glob
import json
import os
import sys

import numpy as np

import seed_means

METRICS = (("FactorVAE", lambda r: r["factor_vae"]["eval_accuracy"]),
           ("MIG", lambda r: r["mig"]["discrete_mig"]),
           ("DCI-D", lambda r: r["dci"]["disentanglement"]))


def _scores(paths) -> dict[tuple[str, str], list[dict]]:
  """(variant, representation) -> the runs' results for it."""
  out = {}
  for path in paths:
    variant = seed_means.study_variant(path)
    if variant is None:
      continue
    with open(path) as f:
      results = json.load(f)["results"]
    for representation, scores in results.items():
      out.setdefault((variant, representation), []).append(scores)
  return out


def verdict(loop: np.ndarray, alone: np.ndarray) -> str:
  gap = loop.mean() - alone.mean()
  if len(loop) < 2 or len(alone) < 2:
    return f"{gap:+.3f} (one seed: no test)"
  pooled = np.sqrt((loop.var(ddof=1) + alone.var(ddof=1)) / 2)
  word = ("**beats**" if gap > pooled else "loses" if gap < -pooled
          else "within the noise")
  return f"{gap:+.3f} (pooled std {pooled:.3f}): {word}"


def comparison_rows(scores) -> list[str]:
  kinds = sorted({v[:-len("_loop")] for v, _ in scores if v.endswith("_loop")})
  rows = []
  for kind in kinds:
    loop, alone = scores.get((f"{kind}_loop", "mu_s")), scores.get((f"{kind}_alone", "vae_mu"))
    if not loop or not alone:
      continue
    cells = [f"{kind} ({len(loop)} / {len(alone)} seeds)"]
    for _, get in METRICS:
      cells.append(verdict(np.array([get(r) for r in loop]), np.array([get(r) for r in alone])))
    rows.append("| " + " | ".join(cells) + " |")
  return rows


def main(folder: str = "docs/results/copilots"):
  scores = _scores(sorted(glob.glob(os.path.join(folder, "*.json"))))
  for representation in ("mu_s", "vae_mu"):
    print(f"\n`{representation}` of each variant over its seeds (mean ± sample std)\n")
    rows = seed_means.rows_of({v: runs for (v, r), runs in scores.items()
                               if r == representation}, METRICS)
    print("\n".join(seed_means.header(METRICS) + rows))
  print("\n`mu_s` in the loop against the co-pilot alone (`vae_mu`)\n")
  print("| co-pilot (loop / alone seeds) | " + " | ".join(n for n, _ in METRICS) + " |")
  print("|" + "---|" * (len(METRICS) + 1))
  print("\n".join(comparison_rows(scores)))


if __name__ == "__main__":
  main(*sys.argv[1:])
