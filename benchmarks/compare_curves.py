"""Training curves of several runs on one figure, and how far apart they end:
for checking that a change which alters rounding (a fused layer, a different
device split) trains the same way.

  python benchmarks/compare_curves.py /tmp/run_a /tmp/run_b --labels before,after \
      --out docs/results/speed/quickstart_curves.png

Reads each workdir's TensorBoard scalars (`cldis_jax.writer.read_scalars`),
plots the chosen tags against the step, and prints each run's last value and
its mean over the last fifth of training (single steps are noisy).
"""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cldis_jax import writer  # noqa: E402

TAGS = ("loss_diff", "loss_vae", "vae_kl", "beta")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--labels", default=None, help="comma-separated, one per workdir")
  parser.add_argument("--tags", default=",".join(TAGS))
  parser.add_argument("--out", default="curves.png")
  args = parser.parse_args()
  labels = args.labels.split(",") if args.labels else args.workdirs
  tags = args.tags.split(",")
  runs = [writer.read_scalars(w) for w in args.workdirs]
  fig, axes = plt.subplots(1, len(tags), figsize=(4.2 * len(tags), 3.4))
  width = max(24, *(len(l) + 2 for l in labels))
  print(f"{'tag':<12}" + "".join(f"{l:>{width}}" for l in labels)
        + "   (last value / mean of the last fifth)")
  for ax, tag in zip(np.atleast_1d(axes), tags):
    cells = []
    for run, label in zip(runs, labels):
      steps, values = (np.array(v) for v in zip(*run[tag])) if tag in run else ([], [])
      ax.plot(steps, values, label=label, lw=1)
      tail = values[len(values) * 4 // 5:] if len(values) else [np.nan]
      cells.append(f"{values[-1] if len(values) else np.nan:.4g} / {np.mean(tail):.4g}")
    ax.set_title(tag)
    ax.set_xlabel("step")
    if tag in ("loss_vae", "loss_dt"):
      ax.set_yscale("log")
    print(f"{tag:<12}" + "".join(f"{c:>{width}}" for c in cells))
  np.atleast_1d(axes)[0].legend()
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
