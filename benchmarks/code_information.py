"""How much the denoiser of a trained workdir uses its semantic code.

  python benchmarks/code_information.py --workdir /tmp/cldis_quickstart

On --batches batches of --batch images (seeded rows of the dataset), with
the latest checkpoint's EMA weights, for t uniform and one eps draw per
image, it prints:

- the eps MSE with each image's own code and with another image's code (the
  batch's codes rolled by one): if the two are equal, the denoiser ignores
  the code;
- I_diff, the nats by which the right code shortens the diffusion bound
  (`objective.diffusion_information`, what the `diffusion_capacity`
  controller measures during training), mean and standard error over the
  batches.
"""

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import checkpoint, data, diffusion, models as models_lib, objective

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained workdir.")
flags.DEFINE_integer("batches", 16, "Batches to average over.")
flags.DEFINE_integer("batch", 128, "Images per batch.")
flags.DEFINE_integer("seed", 0, "Seed of the rows, t and eps.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  config = checkpoint.stored_config(FLAGS.workdir)
  step, models, params = checkpoint.restore_ema(config, FLAGS.workdir)
  source = data.build_source(config.data, image_size=config.model.image_size,
                             channels=config.model.in_channels)
  process = diffusion.Diffusion.from_config(config.diffusion)

  @jax.jit
  def measure(x0, rng):
    t, eps, x_t = objective.diffusion_inputs(process, x0, rng)
    z_sem = models.diffae.apply({"params": params["diffae"]}, x0, method="encode")
    cond = models_lib.condition(models, params, z_sem)
    denoise = lambda c: models.diffae.apply({"params": params["diffae"]}, x_t, t, c,
                                            method="denoise")
    right, other = denoise(cond), denoise(jnp.roll(cond, 1, axis=0))
    return (jnp.mean(diffusion.eps_mse(right, eps)), jnp.mean(diffusion.eps_mse(other, eps)),
            objective.diffusion_information(process, eps, right, other, t))

  rows = np.random.RandomState(FLAGS.seed).choice(len(source), FLAGS.batches * FLAGS.batch,
                                                  replace=False)
  out = []
  for b in range(FLAGS.batches):
    x0 = data.to_model_range(source.__getitems__(np.sort(rows[b::FLAGS.batches]))["image"])
    out.append([float(v) for v in measure(x0, jax.random.key(FLAGS.seed * 1000 + b))])
  right, other, info = np.array(out).T
  sem = lambda v: v.std(ddof=1) / np.sqrt(len(v))
  print(f"{FLAGS.workdir} at step {step} (model.condition = {config.model.condition}), "
        f"{FLAGS.batches} x {FLAGS.batch} images")
  print(f"eps MSE, own code:     {right.mean():.6f}")
  print(f"eps MSE, another code: {other.mean():.6f}")
  print(f"I_diff: {info.mean():.2f} ± {sem(info):.2f} nats per image (standard error)")


if __name__ == "__main__":
  app.run(main)
