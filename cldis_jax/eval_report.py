"""What an evaluation writes and reports: the headline numbers a paper table
quotes, the printed table (metrics as rows, representations as columns), and
`metrics.json` / `metrics.txt` in the evaluation's directory."""

import json
import os

import numpy as np

from cldis_jax import writer as writer_lib


def jsonable(tree):
  """numpy values inside dicts and lists -> plain Python, for JSON."""
  if isinstance(tree, dict):
    return {k: jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [jsonable(v) for v in tree]
  if isinstance(tree, (np.generic, np.ndarray)):
    return tree.tolist()
  return tree


HEADLINE = (("factor_vae", "eval_accuracy", "FactorVAE"), ("beta_vae", "eval_accuracy", "beta-VAE"),
            ("mig", "discrete_mig", "MIG"), ("dci", "disentanglement", "DCI-D"),
            ("dci", "completeness", "DCI-C"), ("dci", "informativeness_test", "DCI-I"),
            ("sap", "SAP_score", "SAP"), ("modularity", "modularity_score", "modularity"),
            ("modularity", "explicitness_score_test", "explicitness"),
            ("ctd", "ctd", "CTD"), ("ctd", "active_fraction", "CTD active"),
            ("factor_response", "concentration", "probe concentration"),
            ("classifier", "mean", "classifier accuracy"),
            ("residual_probe", "labelled_excess", "residual leak"),
            ("edit", "target", "edit target"), ("edit", "kept", "edit kept"),
            ("swap", "out_of_region", "swap out-of-region"), ("swap", "target", "swap target"),
            ("swap", "kept", "swap kept"), ("dependence", "hsic", "block HSIC"),
            ("dependence", "cross_covariance", "block cross-corr"),
            ("samples", "max_total_variation", "samples max TV"),
            ("samples", "frechet", "samples oracle FD"),
            ("samples", "precision", "samples precision"),
            ("samples", "recall", "samples recall"),
            ("reconstructions", "frechet", "reconstructions oracle FD"),
            ("codes", "frechet", "sampled codes FD"),
            ("fresh", "mse", "MSE (fresh noise)"), ("inverted", "mse", "MSE (inverted)"),
            ("fresh", "min_agreement", "min oracle agreement (fresh noise)"),
            ("sampling", "fid", "FID (samples)"), ("autoencoding", "fid", "FID (autoencoding)"),
            ("sampling", "precision", "precision (samples)"),
            ("sampling", "recall", "recall (samples)"))


def headline(summary) -> dict[str, float]:
  """The numbers a paper table quotes, as `<representation>/<name>`."""
  out = {}
  for rep, res in summary["results"].items():
    for metric, key, label in HEADLINE:
      if key in res.get(metric, {}):  # precision/recall only when asked for
        out[f"{rep}/{label}"] = float(res[metric][key])
    for decodes in ("fresh", "inverted"):  # the autoencoding column, per factor
      for factor, share in res.get(decodes, {}).get("agreement", {}).items():
        out[f"{rep}/{factor} agreement ({decodes})"] = float(share)
    for variant, t in res.get("tad", {}).items():
      out[f"{rep}/TAD ({variant})"] = float(t["tad"])
      out[f"{rep}/TAD attrs ({variant})"] = float(t["num_attributes"])
  return out


def format_table(summary) -> str:
  """Metrics as rows, representations as columns."""
  numbers = headline(summary)
  reps = list(summary["results"])
  labels = list(dict.fromkeys(k.split("/", 1)[1] for k in numbers))
  width = max([len(l) for l in labels] + [6])
  lines = [f"{summary['dataset']} at step {summary['step']} "
           f"({summary['images_encoded']} images encoded)",
           " " * width + "".join(f"{r:>12}" for r in reps)]
  for label in labels:
    cells = [numbers.get(f"{r}/{label}") for r in reps]
    lines.append(f"{label:<{width}}" + "".join(
        f"{v:>12.4f}" if v is not None else f"{'-':>12}" for v in cells))
  for m, why in summary["skipped"].items():
    lines.append(f"{m}: skipped ({why})")
  return "\n".join(lines)


def write(out_dir: str, summary: dict) -> None:
  """`metrics.json` (every number) and `metrics.txt` (the table) in `out_dir`."""
  writer_lib.write_atomic(os.path.join(out_dir, "metrics.txt"), format_table(summary) + "\n")
  writer_lib.write_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(summary, indent=2))
