"""The latent DDIM's codes against the real ones, without the image stage:
the Fréchet distance between sampled and real codes (and between two halves
of the real codes) at several latent step counts, EMA and raw weights; and
the top of both covariance spectra after z-scoring.

  python benchmarks/latent_codes.py WORKDIR [--images 2000] [--steps 10,20,50,100,250,1000]
"""

import argparse

import numpy as np

from cldis_jax import api, codes as codes_lib, latent
from cldis_jax.metrics import generation


def _fd(a, b) -> float:
  return generation.frechet_distance(generation.gaussian_stats(a), generation.gaussian_stats(b))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--images", type=int, default=2000)
  parser.add_argument("--steps", default="10,20,50,100,250,1000")
  args = parser.parse_args()
  model = api.load(args.workdir)
  config, net, state = latent.load_generator(args.workdir, model.config)
  rows = np.random.RandomState(0).choice(len(model.source), args.images, replace=False)
  real = codes_lib.encode_z_sem(model.models, model.params, model.source, rows)
  print(f"real codes, two halves: {_fd(real[:len(real) // 2], real[len(real) // 2:]):.4g}")
  noise, _ = latent.sample_noise(0, np.arange(args.images, dtype=np.int32), net.channels,
                                 (1, 1, 1))
  sampled = None
  for steps in [int(s) for s in args.steps.split(",")]:
    proc = latent.process(config, steps)
    for name, params in (("ema", state.ema_params), ("raw", state.params)):
      z = np.asarray(latent.sample_codes(net, proc, params, state.mean, state.std, noise))
      sampled = z if sampled is None else sampled
      print(f"sampled ({steps} steps, {name} weights) vs real: {_fd(z, real):.4g}")
  spectrum = lambda z: np.linalg.eigvalsh(np.cov(latent.normalise(
      z, np.asarray(state.mean), np.asarray(state.std)), rowvar=False))[::-1]
  print("z-scored covariance spectrum, real:   ", np.array2string(spectrum(real)[:6], precision=3))
  print(f"z-scored covariance spectrum, sampled ({args.steps.split(',')[0]} steps, ema):",
        np.array2string(spectrum(sampled)[:6], precision=3))
  print("smallest real eigenvalues:", np.array2string(spectrum(real)[-3:], precision=3))


if __name__ == "__main__":
  main()
