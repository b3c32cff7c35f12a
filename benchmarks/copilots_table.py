"""Print the co-pilots study's tables for docs/copilots.md, and draw its
plots, from the runs kept in docs/results/copilots/:

- `study_<variant>_seed<k>.json`: each run's evaluation (its `metrics.json`);
- `records/<variant>_seed<k>.json`: each run's study record (its training
  curves; the study program's `result.json`).

The `beta_vae_loop` rows are configs/quickstart.py trained as CL-Dis, the very
runs of docs/study.md's `cldis` rows: where the folder has none of its own they
are read from docs/results/study/results.json, and the output says so.

Prints each variant's mean ± std over its seeds, then, per co-pilot and
metric, whether `mu_s` in the loop beats the co-pilot trained alone (its own
means, `vae_mu`): the gap of the means against the pooled std
sqrt((s1^2 + s2^2) / 2), the test of docs/study.md. Writes `comparison.png`
(every seed's score, per co-pilot and metric) and `pressure.png` (the value
the loop gave each co-pilot over training), and prints that value per loop
run: at the end, where it first reached its highest, and the KL against the
set point.

  python benchmarks/copilots_table.py [docs/results/copilots [docs/results/study/results.json]]
"""

import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import seed_means  # noqa: E402

# (label, reader of a metrics.json entry); the labels are the study records'.
METRICS = (("FactorVAE", lambda r: r["factor_vae"]["eval_accuracy"]),
           ("MIG", lambda r: r["mig"]["discrete_mig"]),
           ("DCI-D", lambda r: r["dci"]["disentanglement"]))
LOOP_OF_STUDY = ("beta_vae_loop", "cldis")  # (this study's name, docs/study.md's)


def _flat(results: dict) -> dict[str, float]:
  """A metrics.json's results as a study record's metrics: "<rep>/<label>"."""
  return {f"{rep}/{label}": float(get(scores)) for rep, scores in results.items()
          for label, get in METRICS}


def _runs(folder: str, study_results: str) -> tuple[dict, dict, str | None]:
  """variant -> per-seed flat metrics; variant -> per-seed curves; a note
  where the beta-VAE loop's rows came from docs/study.md's runs."""
  metrics, curves, note = {}, {}, None
  for path in sorted(glob.glob(os.path.join(folder, "study_*.json"))):
    with open(path) as f:
      metrics.setdefault(seed_means.study_variant(path), []).append(_flat(json.load(f)["results"]))
  for path in sorted(glob.glob(os.path.join(folder, "records", "*.json"))):
    with open(path) as f:
      record = json.load(f)
    curves.setdefault(record["variant"], []).append((record["seed"], record["curves"]))
  ours, theirs = LOOP_OF_STUDY
  if ours not in metrics and os.path.exists(study_results):
    with open(study_results) as f:
      runs = [r for r in json.load(f)["runs"]
              if r["variant"] == theirs and r.get("status") == "completed"]
    metrics[ours] = [r["metrics"] for r in runs]
    curves[ours] = [(r["seed"], r["curves"]) for r in runs]
    note = (f"`{ours}`: the {len(runs)} `{theirs}` runs of {study_results} (the same config, "
            "trained by the same code)")
  return metrics, curves, note


def _values(runs, key) -> np.ndarray:
  return np.array([r[key] for r in runs if key in r])


def verdict(loop: np.ndarray, alone: np.ndarray) -> str:
  gap = loop.mean() - alone.mean()
  if len(loop) < 2 or len(alone) < 2:
    return f"{gap:+.3f} (one seed: no test)"
  pooled = np.sqrt((loop.var(ddof=1) + alone.var(ddof=1)) / 2)
  word = ("**beats**" if gap > pooled else "loses" if gap < -pooled
          else "within the noise")
  return f"{gap:+.3f} (pooled std {pooled:.3f}): {word}"


def _kinds(metrics) -> list[str]:
  return sorted(v[:-len("_loop")] for v in metrics if v.endswith("_loop")
                and f"{v[:-len('_loop')]}_alone" in metrics)


def comparison_rows(metrics) -> list[str]:
  rows = []
  for kind in _kinds(metrics):
    loop, alone = metrics[f"{kind}_loop"], metrics[f"{kind}_alone"]
    cells = [f"{kind} ({len(loop)} / {len(alone)} seeds)"]
    for label, _ in METRICS:
      cells.append(verdict(_values(loop, f"mu_s/{label}"), _values(alone, f"vae_mu/{label}")))
    rows.append("| " + " | ".join(cells) + " |")
  return rows


def mean_rows(metrics, representation) -> list[str]:
  summary = [(label, lambda r, k=f"{representation}/{label}": r[k]) for label, _ in METRICS]
  chosen = {v: runs for v, runs in metrics.items()
            if all(f"{representation}/{label}" in r for r in runs for label, _ in METRICS)}
  return seed_means.header(summary) + seed_means.rows_of(chosen, summary)


def pressure_rows(curves) -> list[str]:
  """Per loop variant and seed, from its record: the value the controller
  gave the co-pilot at the end (`beta`: beta, gamma, lambda_od or C), the
  first logged step at which it reached that run's highest value, and the
  VAE's KL against the controller's set point at the end."""
  rows = ["| variant | seed | value at the end | first at its highest (step) | KL / set point at the end |",
          "|---|---|---|---|---|"]
  for variant in sorted(v for v in curves if v.endswith("_loop")):
    for seed, c in sorted(curves[variant], key=lambda run: run[0]):
      steps, values = np.array(c["beta"]).T
      top = steps[np.argmax(values >= values.max() - 1e-6)]
      kl = f"{c['vae_kl'][-1][1]:.1f} / {c['controller_setpoint'][-1][1]:.1f}" if "vae_kl" in c else "-"
      rows.append(f"| {variant} | {seed} | {values[-1]:.3g} | {int(top)} | {kl} |")
  return rows


def plot_comparison(metrics, path: str):
  """Per metric, per co-pilot: every seed's score alone (vae_mu) and in the
  loop (mu_s, and the loop's own vae_mu), the means as bars."""
  kinds = sorted({v.rsplit("_", 1)[0] for v in metrics})
  series = (("alone: vae_mu", "_alone", "vae_mu", "tab:orange"),
            ("loop: mu_s", "_loop", "mu_s", "tab:blue"),
            ("loop: vae_mu", "_loop", "vae_mu", "tab:gray"))
  fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 1 + 0.7 * len(kinds)),
                           sharey=True, squeeze=False)
  for ax, (label, _) in zip(axes[0], METRICS):
    for i, kind in enumerate(kinds):
      for j, (name, suffix, rep, color) in enumerate(series):
        values = _values(metrics.get(kind + suffix, []), f"{rep}/{label}")
        if len(values):
          y = i + (j - 1) * 0.25
          ax.scatter(values, [y] * len(values), color=color, s=18, label=name)
          ax.plot([values.mean()] * 2, [y - 0.1, y + 0.1], color=color, lw=2)
    ax.set_title(label)
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(range(len(kinds)), kinds)
  axes[0][0].invert_yaxis()
  handles, names = axes[0][0].get_legend_handles_labels()
  unique = dict(zip(names, handles))
  axes[0][-1].legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def plot_pressure(curves, path: str):
  """The value the controller gave each co-pilot in the loop (its `beta`
  curve: beta, gamma, lambda_od or C), one line per seed."""
  loops = sorted(v for v in curves if v.endswith("_loop"))
  if not loops:
    return
  fig, axes = plt.subplots(1, len(loops), figsize=(3.2 * len(loops), 3), squeeze=False)
  for ax, variant in zip(axes[0], loops):
    for _, seed_curves in curves[variant]:
      steps, values = np.array(seed_curves["beta"]).T
      ax.plot(steps, values, lw=1)
    ax.set_title(variant[:-len("_loop")], fontsize=10)
    ax.set_xlabel("step")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main(folder: str = "docs/results/copilots",
         study_results: str = "docs/results/study/results.json"):
  metrics, curves, note = _runs(folder, study_results)
  if note:
    print(note)
  for representation in ("mu_s", "vae_mu"):
    print(f"\n`{representation}` of each variant over its seeds (mean ± sample std)\n")
    print("\n".join(mean_rows(metrics, representation)))
  print("\n`mu_s` in the loop against the co-pilot alone (`vae_mu`)\n")
  print("| co-pilot (loop / alone seeds) | " + " | ".join(n for n, _ in METRICS) + " |")
  print("|" + "---|" * (len(METRICS) + 1))
  print("\n".join(comparison_rows(metrics)))
  print("\nThe controller's value for each loop run\n")
  print("\n".join(pressure_rows(curves)))
  plot_comparison(metrics, os.path.join(folder, "comparison.png"))
  plot_pressure(curves, os.path.join(folder, "pressure.png"))
  print(f"\nwrote {folder}/comparison.png, {folder}/pressure.png")


if __name__ == "__main__":
  main(*sys.argv[1:])
