"""How many pixels does one factor move? Procedural Shapes3D (docs/autoencoding.md).

  python benchmarks/factor_pixels.py [--scenes 200] [--resolution 32] [--threshold 0.05]

Renders random scenes, changes one factor at a time to another random value
and counts the pixels whose largest channel change exceeds --threshold of
the 0-255 range. Prints the median and mean count per factor: how much of
the image a decoder gets wrong when it draws that factor from the noise
instead of the code.
"""

import argparse

import numpy as np

from cldis_jax.data import shapes3d


def changed_pixels(factors: np.ndarray, image: np.ndarray, which: int, rng, resolution: int,
                   threshold: float) -> int:
  """Pixels of `image` (the scene `factors`) that move when factor `which`
  takes another value."""
  other = factors.copy()
  size = shapes3d.FACTORS.sizes[which]
  other[which] = (factors[which] + 1 + rng.integers(size - 1)) % size
  changed = shapes3d.render(other[None], resolution).astype(np.float32)
  return int((np.abs(image - changed).max(-1) > threshold * 255).sum())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--scenes", type=int, default=200)
  parser.add_argument("--resolution", type=int, default=32)
  parser.add_argument("--threshold", type=float, default=0.05)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = np.random.default_rng(args.seed)
  sizes = shapes3d.FACTORS.sizes
  scenes = [np.array([rng.integers(n) for n in sizes]) for _ in range(args.scenes)]
  print(f"pixels (of {args.resolution ** 2}) changed by more than {args.threshold:.0%} "
        f"when one factor changes, {args.scenes} scenes:")
  images = [shapes3d.render(f[None], args.resolution).astype(np.float32) for f in scenes]
  for which, name in enumerate(shapes3d.FACTORS.names):
    counts = [changed_pixels(f, image, which, rng, args.resolution, args.threshold)
              for f, image in zip(scenes, images)]
    print(f"  {name:12s} median {np.median(counts):6.1f}   mean {np.mean(counts):6.1f}")


if __name__ == "__main__":
  main()
