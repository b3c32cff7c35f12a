"""Wall time of every metric at the standard sizes, on codes whose answer is known.

  python benchmarks/metrics_benchmark.py                 # everything
  python benchmarks/metrics_benchmark.py --parts=mig,sap,ctd

Supervised metrics: disentanglement_lib's sizes (10,000 train / 5,000 test,
FactorVAE 10,000 variance points and 10,000 + 5,000 votes of 64) over the
Shapes3D factor space (480,000 rows), codes = factors + noise, randomly
rotated (entangled codes are the slow case for the estimators). TAD: 1,000
images, 40 attributes, --tad_latents latents. CTD: --ctd_sources x 5
directions x (2 * --ctd_steps + 1) frames at --ctd_resolution, rendered by
the procedural scene (rendering not timed). `encode`: images/s of the code
table (reading + encoding) for --config with random weights.
`--parts=ctd_validation` prints CTD under the validation conditions of
`cldis_jax/metrics/ctd_validation.py` (32 px, 8 sources, 6 steps a side).
"""

import time

from absl import app, flags
import jax
import numpy as np
from ml_collections import config_flags

from cldis_jax import codes, data, models as models_lib
from cldis_jax.data import shapes3d
from cldis_jax.metrics import (beta_vae, ctd, ctd_validation, dci, factor_vae, mig,
                               modularity, protocol, sap, tad)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/quickstart.py", "For the encode part.")
flags.DEFINE_list("parts", ["factor_vae", "beta_vae", "mig", "sap", "modularity", "dci",
                            "tad", "ctd", "encode"],
                  "What to run; also ctd_validation: the CTD validation table.")
flags.DEFINE_integer("dci_workers", 0, "Processes fitting DCI's trees (0: one per core).")
flags.DEFINE_integer("tad_latents", 512, "Latents for TAD (EncDiff flattens tokens).")
flags.DEFINE_integer("ctd_sources", 16, "CTD sources.")
flags.DEFINE_integer("ctd_steps", 6, "CTD frames per side.")
flags.DEFINE_integer("ctd_resolution", 64, "CTD frame size.")
flags.DEFINE_integer("encode_images", 4096, "Images for the encode part.")


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def _ground_truth_table():
  space = shapes3d.FACTORS
  rng = np.random.RandomState(0)
  factors = space.factors_of(np.arange(len(space)))
  scaled = (factors - factors.mean(0)) / factors.std(0)
  codes_ = np.concatenate([scaled, np.zeros((len(space), 4))], 1) + 0.1 * rng.randn(
      len(space), 10)
  rotation, _ = np.linalg.qr(rng.randn(10, 10))
  gt = protocol.GroundTruth(space.sizes, space.index_of, space.names)
  return gt, protocol.table_representation((codes_ @ rotation).astype(np.float32))


def _ctd_validation():
  """CTD's validation conditions (cldis_jax/metrics/ctd_validation.py) at 32 px."""
  eye = np.eye(5)
  mixed = lambda theta: ctd_validation.rotation(theta).T
  conditions = [("ground truth", eye, {}), *[(f"rotated theta={t:.2f}", mixed(t), {})
                                           for t in (0.2, 0.5, 1.0, np.pi / 2)],
                ("ground truth + brightness leak 0.4", eye, dict(brightness_leak=0.4)),
                ("ground truth + duplicate -e_2", np.concatenate([eye, -eye[2:3]]), {}),
                *[(f"{name}, noise {n}, calibrated floor", d, dict(noise=n))
                  for n in (0.01, 0.03) for name, d in (("ground truth", eye),
                                                        ("rotated pi/2", mixed(np.pi / 2)))]]
  for name, directions, kw in conditions:
    frames = ctd_validation.traversals(directions, num_sources=8, steps=6, resolution=32, **kw)
    floor = (ctd.noise_floor(*ctd_validation.null_pairs(16, 32, kw["noise"]))
             if "noise" in kw else None)
    out = ctd.ctd(frames, floor)
    print(f"  {name:44s} CTD {out['ctd']:.3f}  C {np.mean(out['consistency']):.3f}  "
          f"X {np.mean(out['exclusivity']):.3f}  P {np.mean(out['preservation']):.3f}  "
          f"X_k {np.round(out['exclusivity'], 2).tolist()}", flush=True)


def main(argv):
  del argv
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {jax.device_count()} device(s)")
  parts = FLAGS.parts
  gt, rep = _ground_truth_table()
  rs = lambda: np.random.RandomState(0)
  supervised = {
      "factor_vae": lambda: factor_vae.compute_factor_vae(gt, rep, rs())["eval_accuracy"],
      "beta_vae": lambda: beta_vae.compute_beta_vae(gt, rep, rs())["eval_accuracy"],
      "mig": lambda: mig.compute_mig(gt, rep, rs())["discrete_mig"],
      "sap": lambda: sap.compute_sap(gt, rep, rs())["SAP_score"],
      "modularity": lambda: modularity.compute_modularity_explicitness(gt, rep, rs()),
      "dci": lambda: dci.compute_dci(gt, rep, rs(), workers=FLAGS.dci_workers)["disentanglement"],
  }
  for name, fn in supervised.items():
    if name in parts:
      seconds, value = _timed(fn)
      shown = ({k: round(v, 3) for k, v in value.items()} if isinstance(value, dict)
               else round(value, 4))
      print(f"{name:12s} {seconds:8.2f} s   (rotated codes: {shown})", flush=True)
  if "tad" in parts:
    r = np.random.RandomState(0)
    labels = (r.rand(1000, 40) < 0.3).astype(np.int64)
    codes_ = r.randn(1000, FLAGS.tad_latents)
    codes_[:, :40] += 2.0 * labels
    for variant in tad.VARIANTS:
      seconds, out = _timed(lambda v=variant: tad.tad(codes_, labels, variant=v))
      print(f"tad {variant:8s} {seconds:8.2f} s   (TAD {out['tad']:.3f}, "
            f"{out['num_attributes']} attributes)", flush=True)
  if "ctd" in parts:
    frames = ctd_validation.traversals(np.eye(5), num_sources=FLAGS.ctd_sources,
                                       steps=FLAGS.ctd_steps, resolution=FLAGS.ctd_resolution)
    first, out = _timed(lambda: ctd.ctd(frames))
    again, out = _timed(lambda: ctd.ctd(frames))
    flows = frames.shape[0] * frames.shape[1] * (frames.shape[2] - 1)
    print(f"ctd          {again:8.2f} s   ({first:.1f} s with compilation; {flows} flows "
          f"at {FLAGS.ctd_resolution}px; CTD {out['ctd']:.3f} on ground-truth directions)")
  if "ctd_validation" in parts:
    _ctd_validation()
  if "encode" in parts:
    config = FLAGS.config
    models = models_lib.build_models(config.model)
    params = jax.device_get(models_lib.init_params(models, jax.random.key(0)))
    source = data.source_of(config)
    table = codes.CodeTable(source, models, params, reference_images=256)  # compiles
    rows = np.random.RandomState(1).choice(len(source), FLAGS.encode_images, replace=False)
    seconds, _ = _timed(lambda: table.ensure(rows))
    print(f"encode       {seconds:8.2f} s   ({FLAGS.encode_images / seconds:.0f} img/s, "
          f"{config.model.image_size}px, read + encode all three representations)")


if __name__ == "__main__":
  app.run(main)
