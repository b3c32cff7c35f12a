"""How much of each training recipe's weight falls on the high-noise steps,
where a region's colour is no longer readable in x_t (docs/autoencoding.md).

  python benchmarks/snr_weights.py [--from_t 758] [--region_pixels 256]

Prints, for the linear schedule (T = 1000), the share of the total x0-space
weight (uniform t) at t >= from_t for every prediction x loss weight, and
the last t at which the mean of a region of `region_pixels` pixels still has
SNR >= 1 (per-pixel SNR times the pixel count).
"""

import argparse

import numpy as np

from cldis_jax import diffusion, diffusion_loss


FORMULA = {("eps", "none"): "SNR", ("v", "none"): "SNR + 1", ("x0", "none"): "1",
           ("eps", "p2"): "SNR / (1 + SNR)", ("eps", "min_snr"): "min(SNR, 5)",
           ("eps", "truncated_snr"): "max(SNR, 1)"}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--from_t", type=int, default=758)
  parser.add_argument("--region_pixels", type=int, default=256)
  args = parser.parse_args()
  for schedule in ("linear",):
    process = diffusion.Diffusion.create(schedule, 1000)
    snr = process.snr()
    readable = int(np.max(np.nonzero(snr * args.region_pixels >= 1.0)[0]))
    print(f"{schedule}: a {args.region_pixels}-pixel region's mean is readable (SNR >= 1) "
          f"up to t = {readable}")
    print(f"| recipe | x0-space weight | share at t >= {args.from_t} |")
    print("|---|---|---|")
    rows = [(f"{p}, plain MSE", p, "none") for p in diffusion.PREDICTIONS]
    rows += [(w, "eps", w) for w in diffusion_loss.LOSS_WEIGHTS[1:]]  # the same for any target
    for name, prediction, weight in rows:
      s = diffusion_loss.Settings(loss_weight=weight)
      w = diffusion_loss.x0_weight(s, prediction, snr)
      print(f"| {name} | {FORMULA[(prediction, weight)]} | {w[args.from_t:].sum() / w.sum():.1e} |")
    high = diffusion_loss.Settings(timesteps="high")
    p = diffusion_loss.timestep_probabilities(high, 1000)
    for prediction in diffusion.PREDICTIONS:
      w = diffusion_loss.own_x0_weight(prediction, snr) * p
      print(f"| {prediction}, half the t from [700, 1000) | {FORMULA[(prediction, 'none')]} "
            f"| {w[args.from_t:].sum() / w.sum():.1e} |")


if __name__ == "__main__":
  main()
