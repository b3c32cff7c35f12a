"""Two diagnostics of a trained workdir's codes: does the denoiser use its
semantic code, and do the distilled code's quiet dims leak factor information.

  python benchmarks/code_diagnostics.py --workdir /tmp/cldis_quickstart

On --batches batches of --batch images (seeded rows of the dataset), with
the latest checkpoint's EMA weights, for t uniform and one eps draw per
image, it prints:

- the eps MSE with each image's own code and with another image's code (the
  batch's codes rolled by one): if the two are equal, the denoiser ignores
  the code;
- I_diff, the nats by which the right code shortens the diffusion bound
  (`objective.diffusion_information`, what the `diffusion_capacity`
  controller measures during training), mean and standard error over the
  batches;
- for mu_s and vae_mu (sources with factors): each dim's std over
  --reference images, and MIG (--mig_points points, the library's binning)
  of all dims and of the dims whose std is at least --active_std alone. MIG
  bins each dim over its own range, so a dim of tiny amplitude that copies an
  active one lowers it as much as a loud copy would;
- how well the student follows its teacher: the share of each vae_mu dim's
  variance that the same dim of mu_s explains (R^2; 1 is a perfect copy).
"""

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from cldis_jax import checkpoint, codes, data, diffusion, models as models_lib, objective
from cldis_jax.metrics import mig, protocol

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A trained workdir.")
flags.DEFINE_integer("batches", 16, "Batches to average over.")
flags.DEFINE_integer("batch", 128, "Images per batch.")
flags.DEFINE_integer("seed", 0, "Seed of the rows, t and eps.")
flags.DEFINE_integer("reference", 3000, "Images for the per-dim std.")
flags.DEFINE_integer("mig_points", 3000, "MIG's num_train.")
flags.DEFINE_float("active_std", 0.1, "A dim with at least this std counts as active.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  config = checkpoint.stored_config(FLAGS.workdir)
  step, models, params = checkpoint.restore_ema(config, FLAGS.workdir)
  source = data.source_of(config)
  process = diffusion.process(config.diffusion)

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
    x0 = data.images_at(source, np.sort(rows[b::FLAGS.batches]))
    out.append([float(v) for v in measure(x0, jax.random.key(FLAGS.seed * 1000 + b))])
  right, other, info = np.array(out).T
  sem = lambda v: v.std(ddof=1) / np.sqrt(len(v))
  print(f"{FLAGS.workdir} at step {step} (model.condition = {config.model.condition}), "
        f"{FLAGS.batches} x {FLAGS.batch} images")
  print(f"eps MSE, own code:     {right.mean():.6f}")
  print(f"eps MSE, another code: {other.mean():.6f}")
  print(f"I_diff: {info.mean():.2f} ± {sem(info):.2f} nats per image (standard error)")
  if not source.factor_space:
    return
  table = codes.CodeTable(source, models, params, reference_images=FLAGS.reference,
                          seed=FLAGS.seed, representations=("mu_s", "vae_mu"))
  truth = protocol.GroundTruth.of(source)
  student, teacher = (table.codes[r][table.reference] for r in ("mu_s", "vae_mu"))
  r2 = 1.0 - np.mean(np.square(student - teacher), axis=0) / np.var(teacher, axis=0)
  print(f"R^2 of each vae_mu dim by the same mu_s dim: {np.array2string(r2, precision=2)}")
  for rep in ("mu_s", "vae_mu"):
    std = table.codes[rep][table.reference].std(axis=0)
    active = std >= FLAGS.active_std
    lookup = table.representation(rep)
    score = lambda keep: mig.compute_mig(
        truth, lambda rows: lookup(rows) * keep, np.random.RandomState(0),
        num_train=FLAGS.mig_points, batch_size=16)["discrete_mig"]
    print(f"{rep}: std per dim {np.array2string(std, precision=3)}; MIG {score(1.0):.3f} "
          f"with all dims, {score(active.astype(np.float32)):.3f} with the {active.sum()} "
          f"dims of std >= {FLAGS.active_std}")


if __name__ == "__main__":
  app.run(main)
