"""Entry point: `python -m cldis_jax.main --config configs/<name>.py --mode=<mode>`.

Kept thin on purpose: flags, optional multi-host initialisation, then a call
into the library (which Colab notebooks and tests import directly).
"""

import logging as std_logging
import os

from absl import app, flags, logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and pictures go.")
flags.DEFINE_enum("mode", "train",
                  ["train", "evaluate", "navigate", "edit", "study", "summary", "data"],
                  "train: train (resuming from --workdir's latest checkpoint). "
                  "evaluate: every metric on --workdir's latest checkpoint, written "
                  "to <workdir>/eval/<step>/. "
                  "navigate: learn directions in z_sem on --workdir's latest checkpoint "
                  "(<workdir>/navigation/). "
                  "edit: edit images (--images, or config.edit) along directions, "
                  "writing grids to <workdir>/edit/<step>/. "
                  "study: train and evaluate every variant x seed of config.study in "
                  "<workdir>/runs/ (skipping finished runs) and summarise them in "
                  "<workdir>/results.md, results.json and plots. "
                  "summary: print the parameter count of every module. "
                  "data: open the dataset, time a few batches, and write "
                  "data_batch.png / data_factors.png into --workdir.")
flags.DEFINE_list("images", None, "edit: image files to edit (overrides config.edit.images).")
flags.DEFINE_integer("summary_depth", 2, "How many module levels the summary lists.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host launches).")
flags.mark_flags_as_required(["config"])


def _quiet_orbax(record) -> bool:
  """orbax logs dozens of INFO lines per checkpoint; keep its warnings only."""
  return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_quiet_orbax)
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(),
               jax.process_count(), jax.devices())
  config = FLAGS.config
  if FLAGS.mode == "train":
    if not FLAGS.workdir:
      raise app.UsageError("--mode=train needs --workdir (checkpoints, events, samples)")
    from cldis_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == "evaluate":
    if not FLAGS.workdir:
      raise app.UsageError("--mode=evaluate needs --workdir (the trained run)")
    from cldis_jax import evaluate  # pylint: disable=g-import-not-at-top
    print(evaluate.format_table(evaluate.run(config, FLAGS.workdir)))
  elif FLAGS.mode in ("navigate", "edit"):
    if not FLAGS.workdir:
      raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir (the trained run)")
    if FLAGS.mode == "navigate":
      from cldis_jax import navigate  # pylint: disable=g-import-not-at-top
      result = navigate.run(config, FLAGS.workdir)
      print(f"navigation: held-out reconstructor accuracy {result['accuracy']:.3f} "
            f"over {result['num_directions']} directions; {result['grid']}")
    else:
      from cldis_jax import edit  # pylint: disable=g-import-not-at-top
      if FLAGS.images:
        config.edit.images = tuple(FLAGS.images)
      print("\n".join(edit.run(config, FLAGS.workdir)["files"]))
  elif FLAGS.mode == "study":
    if not FLAGS.workdir:
      raise app.UsageError("--mode=study needs --workdir (the study directory)")
    from cldis_jax import study  # pylint: disable=g-import-not-at-top
    study.run(config, FLAGS.workdir)
    print(open(os.path.join(FLAGS.workdir, "results.md")).read())
  elif FLAGS.mode == "summary":
    from cldis_jax import summary  # pylint: disable=g-import-not-at-top
    print(summary.parameter_table(config.model, FLAGS.summary_depth))
  elif FLAGS.mode == "data":
    from cldis_jax.data import preview  # pylint: disable=g-import-not-at-top
    print(preview.describe(config, FLAGS.workdir or "."))


if __name__ == "__main__":
  app.run(main)
