"""The study's summary: results.json, results.md and the plots, from run records.

`write(config, workdir, records)` is pure bookkeeping over the records the
study program keeps on disk (one per finished or failed run), so it can be
rewritten at any time from whatever has finished.
"""

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend)
import numpy as np  # noqa: E402

from cldis_jax import config_lib, writer as writer_lib  # noqa: E402

# The evaluate keys that define the disentanglement_lib protocol's sample sizes.
PROTOCOL_KEYS = ("num_train", "num_test", "num_variance_estimate", "group_batch_size",
                 "code_batch_size", "num_bins", "prune_threshold", "reference_images")
# Training curves plotted, one panel each; a list is several tags in one panel.
PANELS = (("beta",), ("controller_signal", "controller_setpoint"), ("loss_diff",),
          ("vae_nll",), ("vae_kl",), ("loss_dt",))


def protocol(config) -> dict:
  """What every run's evaluation used, and whether it is the full
  disentanglement_lib protocol (`reduced` lists each size that differs)."""
  e, full = config.evaluate, config_lib.base_config().evaluate
  reduced = {k: e[k] for k in PROTOCOL_KEYS if e[k] != full[k]}
  return dict(metrics=list(e.metrics), sizes={k: e[k] for k in PROTOCOL_KEYS},
              reduced=reduced, ctd=e.ctd.to_dict() if "ctd" in e.metrics else None)


def summarize(records) -> dict:
  """variant -> metric key ("<rep>/<label>") -> {mean, std, n, values}."""
  by_variant: dict[str, dict[str, list[float]]] = {}
  for r in records:
    if r.get("status") != "completed":
      continue
    table = by_variant.setdefault(r["variant"], {})
    for key, value in r["metrics"].items():
      table.setdefault(key, []).append(float(value))
  return {v: {k: dict(mean=float(np.mean(x)), std=float(np.std(x, ddof=1)) if len(x) > 1
                      else 0.0, n=len(x), values=x) for k, x in table.items()}
          for v, table in by_variant.items()}


def _cell(s) -> str:
  return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def markdown(config, records, summary, proto) -> str:
  """results.md: the setup, then one row per (variant, representation)."""
  t, runs = config.train, records
  done = [r for r in runs if r.get("status") == "completed"]
  failed = [r for r in runs if r.get("status") == "failed"]
  lines = ["# Study results", "",
           f"Every run: `{config.data.name}` at {config.model.image_size} px, "
           f"{t.num_steps} steps of batch {t.batch_size}; seeds {list(config.study.seeds)}; "
           f"{len(done)} of {len(config.study.variants) * len(config.study.seeds)} runs "
           f"finished, {len(failed)} failed. Cells: mean ± std over seeds (sample std); "
           "n in the last column.", ""]
  if proto["reduced"]:
    sizes = ", ".join(f"{k}={v}" for k, v in proto["reduced"].items())
    lines += [f"**Reduced protocol** (screening; not comparable with published numbers): "
              f"{sizes}; the rest as disentanglement_lib.", ""]
  else:
    lines += ["Protocol: disentanglement_lib's sample sizes.", ""]
  labels = list(dict.fromkeys(k.split("/", 1)[1] for v in summary.values() for k in v))
  lines += ["| variant | representation | " + " | ".join(labels) + " | n |",
            "|---|---|" + "---|" * len(labels) + "---|"]
  for variant in config.study.variants:
    table = summary.get(variant, {})
    reps = list(dict.fromkeys(k.split("/", 1)[0] for k in table))
    for rep in reps:
      cells = [_cell(table[f"{rep}/{l}"]) if f"{rep}/{l}" in table else "–" for l in labels]
      n = max(table[k]["n"] for k in table if k.startswith(rep + "/"))
      lines.append(f"| {variant} | {rep} | " + " | ".join(cells) + f" | {n} |")
  if failed:
    lines += ["", "Failed runs:", ""]
    lines += [f"- {r['variant']} seed {r['seed']}: {r['error'].splitlines()[0]}" for r in failed]
  return "\n".join(lines) + "\n"


def _mean_curve(records, tag):
  """(steps, mean over the runs that logged `tag` at every step they share)."""
  curves = [dict(map(tuple, r["curves"][tag])) for r in records if tag in r.get("curves", {})]
  if not curves:
    return None
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  return np.array(steps), np.array([np.mean([c[s] for c in curves]) for s in steps])


def plot_training(config, records, path: str) -> str:
  """One panel per curve group, one line per variant (mean over its seeds)."""
  fig, axes = plt.subplots(2, 3, figsize=(15, 8))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, tags in zip(axes.flat, PANELS):
    for i, variant in enumerate(config.study.variants):
      mine = [r for r in records if r["variant"] == variant and r.get("status") == "completed"]
      for tag, style in zip(tags, ("-", "--")):
        curve = _mean_curve(mine, tag)
        if curve is not None and np.ptp(curve[1]) + abs(curve[1]).max() > 0:
          ax.plot(*curve, style, color=colors[i % len(colors)],
                  label=variant if tag == tags[0] else None)
    ax.set_title(" / ".join(tags) + ("  (dashed: set point)" if len(tags) > 1 else ""))
    ax.set_xlabel("step")
    if tags[0] in ("vae_nll", "loss_diff"):
      ax.set_yscale("log")
  axes.flat[0].legend(fontsize=8)
  fig.tight_layout()
  with writer_lib.replacing(path) as tmp:
    fig.savefig(tmp, dpi=80, format="png")
  plt.close(fig)
  return path


REP_COLORS = {"mu_s": "tab:blue", "vae_mu": "tab:orange", "z_sem_pca": "tab:green"}


def plot_metrics(config, summary, path: str,
                 labels=("FactorVAE", "MIG", "DCI-D", "beta-VAE", "CTD")) -> str:
  """Horizontal bars per (variant, representation), one panel per metric,
  seed std as error bars, coloured by representation."""
  labels = [l for l in labels if any(k.endswith("/" + l) for v in summary.values() for k in v)]
  rows = [(v, rep) for v in config.study.variants
          for rep in dict.fromkeys(k.split("/", 1)[0] for k in summary.get(v, {}))]
  height = max(3.0, 1.0 + 0.28 * len(rows))
  fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(4.0 * max(1, len(labels)) + 3,
                                                            height), squeeze=False, sharey=True)
  y = np.arange(len(rows))[::-1]
  for ax, label in zip(axes[0], labels):
    cells = [summary.get(v, {}).get(f"{r}/{label}") for v, r in rows]
    ax.barh(y, [c["mean"] if c else 0.0 for c in cells],
            xerr=[c["std"] if c else 0.0 for c in cells], capsize=2,
            color=[REP_COLORS.get(r, "tab:gray") for _, r in rows])
    ax.set_title(label)
    ax.grid(axis="x", alpha=0.3)
  axes[0][0].set_yticks(y, [f"{v} · {r}" for v, r in rows], fontsize=8)
  fig.tight_layout()
  with writer_lib.replacing(path) as tmp:
    fig.savefig(tmp, dpi=80, format="png")
  plt.close(fig)
  return path


def write(config, workdir: str, records) -> dict:
  """Rewrites results.json, results.md, training.png and metrics.png."""
  proto = protocol(config)
  summary = summarize(records)
  out = dict(protocol=proto, steps=config.train.num_steps, batch_size=config.train.batch_size,
             dataset=config.data.name, seeds=list(config.study.seeds),
             variants=config.study.variants.to_dict(), summary=summary,
             runs=[{k: v for k, v in r.items() if k != "traceback"} for r in records])
  writer_lib.write_atomic(os.path.join(workdir, "results.json"), json.dumps(out, indent=1))
  writer_lib.write_atomic(os.path.join(workdir, "results.md"),
                          markdown(config, records, summary, proto))
  if any(r.get("status") == "completed" for r in records):
    plot_training(config, records, os.path.join(workdir, "training.png"))
    plot_metrics(config, summary, os.path.join(workdir, "metrics.png"))
  return out
