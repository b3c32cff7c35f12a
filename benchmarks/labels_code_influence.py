"""How much a labelled run's denoiser follows its factor codes: decode the
same images with each labelled factor set to its first, middle and last
value, once from
the images' DDIM inversions (as an edit does) and once from fresh noise,
and print the per-pixel standard deviation across the three decodes,
averaged over pixels (images in [-1, 1]; 0: the code is ignored).

  python benchmarks/labels_code_influence.py /tmp/cldis_labels_study/runs/labels_1000/seed0
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import api, inference


def main(workdir: str, count: int = 6) -> None:
  model = api.load(workdir)
  x = jnp.asarray(model.images(count=count))
  z = inference.encode(model.models, model.params, x)
  starts = {"inversion": inference.invert(model.models, model.invert_process, model.params,
                                          x, z),
            "fresh noise": jax.random.normal(jax.random.key(1), x.shape)}
  print(f"{workdir}: step {model.step}, {count} images")
  for name in model.factors:
    table = model.factor_table(name)
    f, rows = model.factor_index(name), table[[0, len(table) // 2, len(table) - 1]]
    cells = []
    for start, x_T in starts.items():
      out = np.asarray(inference.decode_with_factor(model.models, model.decode_process,
                                                    model.params, f, z, x_T, jnp.asarray(rows)))
      cells.append(f"{start} {out.std(axis=1).mean():.3f}")
    print(f"  {name:<12} " + "   ".join(cells))


if __name__ == "__main__":
  main(*sys.argv[1:2])
