"""The `autoencoding` column of a trained run re-read with other DDIM decode
step counts: does the sampler or the model limit what decodes from fresh
noise show?

  python benchmarks/decode_steps.py RUN_WORKDIR 20 50

RUN_WORKDIR is one training run (a study's runs/<variant>/seed<k>); it is
evaluated with the config stored in its checkpoint, `edit.decode_steps` set
to each count and `evaluate.metrics` to the autoencoding column only. Each
evaluation is written to RUN_WORKDIR/eval_decode<steps>/ and one line per
count is printed: the fresh-noise agreement per factor and the fresh MSE.
"""

import argparse
import json
import os

from cldis_jax import evaluate, trained


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("steps", type=int, nargs="+", help="DDIM decode step counts")
  args = parser.parse_args()
  run = trained.load(args.workdir)
  config = run.config  # the stored config; only the decode step count changes per count
  config.evaluate.metrics = ("autoencoding",)
  for steps in args.steps:
    config.edit.decode_steps = steps
    out = os.path.join(args.workdir, f"eval_decode{steps}")
    evaluate.evaluate_params(config, run.models, run.params, run.source, out, run.step)
    with open(os.path.join(out, "metrics.json")) as f:
      fresh = json.load(f)["results"]["autoencoding"]["fresh"]
    print(f"step {run.step}, {steps} decode steps: "
          + " / ".join(f"{k} {v:.2f}" for k, v in fresh["agreement"].items())
          + f"; MSE {fresh['mse']:.4f}", flush=True)


if __name__ == "__main__":
  main()
