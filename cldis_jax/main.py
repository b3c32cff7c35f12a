"""Entry point: `python -m cldis_jax.main --config configs/<name>.py --mode=<mode>`.

Kept thin on purpose: flags, optional multi-host initialisation, then a call
into the library (which Colab notebooks and tests import directly). User
errors (a bad config value or override, a missing file, a locked workdir) end
in one line, `error: ...`, and exit code 2; other errors keep their traceback.
"""

import difflib
import logging as std_logging
import os

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from cldis_jax import config_lib, errors, parallel, topology

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and pictures go.")
flags.DEFINE_enum("mode", "train",
                  ["train", "evaluate", "navigate", "edit", "study", "summary", "data",
                   "compile", "train_latent", "sample"],
                  "train: train (resuming from --workdir's latest checkpoint). "
                  "evaluate: every metric on --workdir's latest checkpoint, written "
                  "to <workdir>/eval/<step>/. "
                  "navigate: learn directions in z_sem on --workdir's latest checkpoint "
                  "(<workdir>/navigation/). "
                  "edit: edit images (--images, or config.edit) along directions, "
                  "writing grids to <workdir>/edit/<step>/. "
                  "train_latent: train the latent DDIM (Diff-AE's unconditional "
                  "sampler) on --workdir's latest checkpoint (<workdir>/latent/). "
                  "sample: unconditional samples through it, written to "
                  "<workdir>/sample/<step>/. "
                  "study: train and evaluate every variant x seed of config.study in "
                  "<workdir>/runs/ (skipping finished runs) and summarise them in "
                  "<workdir>/results.md, results.json and plots. "
                  "summary: print the parameter count of every module. "
                  "data: open the dataset, time a few batches, and write "
                  "data_batch.png / data_factors.png into --workdir. "
                  "compile: compile the run's programs for the TPU topologies of "
                  "config.compile (no TPU needed; libtpu installed) and write their memory "
                  "per chip, FLOPs and roofline bound to <workdir>/compile/.")
flags.DEFINE_list("images", None, "edit: image files to edit (overrides config.edit.images).")
flags.DEFINE_integer("summary_depth", 2, "How many module levels the summary lists.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first (multi-host launches).")
flags.DEFINE_integer("cpu_devices", 0,
                     "CPU-only machines: the XLA host devices the CPU is split into, the batch "
                     "sharded over them. 0: one per core (the largest count dividing "
                     "train.batch_size) to train and evaluate, one device to navigate and "
                     "edit (which run on one); 1: a single device, convolutions on Eigen.")
flags.DEFINE_bool("allow_config_change", False,
                  "train: resume even if keys that change what is trained (model, data, "
                  "batch, seed, objective, optimiser) differ from the checkpoint's config.")
flags.mark_flags_as_required(["config"])


# The modes that need --workdir, and what it is to them.
_WORKDIR_OF = {"train": "checkpoints, events, samples", "evaluate": "the trained run",
               "navigate": "the trained run", "edit": "the trained run",
               "train_latent": "the trained run", "sample": "the trained run",
               "study": "the study directory", "compile": "it writes <workdir>/compile/"}


def _quiet_orbax(record) -> bool:
  """orbax logs dozens of INFO lines per checkpoint; keep its warnings only."""
  return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _config_spec(argv) -> str:
  """The value of --config in argv ('' if absent)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg[len("--config="):]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def _unknown_override(argv, error) -> str:
  """The message for an override naming a key the config does not have."""
  try:
    base = config_lib.load_config(_config_spec(argv))
  except Exception:  # pylint: disable=broad-except
    return f"a --config override names an unknown key ({errors.one_line(error)})"
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].partition("=")[0].split(".")
    node, where = base, "config"
    for key in path:
      if not hasattr(node, "keys") or key not in node:
        valid = sorted(node.keys()) if hasattr(node, "keys") else []
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = (f"did you mean {', '.join(f'{where}.{c}' for c in close)}?" if close
                else f"valid keys of {where}: {', '.join(valid)}")
        return f"{arg.partition('=')[0]}: {where} has no key {key!r} ({hint})"
      node, where = node[key], f"{where}.{key}"
  return f"a --config override names an unknown key ({errors.one_line(error)})"


def _parse_flags(argv):
  """absl's parsing, with a bad --config or override as one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:  # a config file that raised shows its traceback: keep its last line
    message = str(e)
    if "Traceback (most recent call last)" in message:
      head = message.partition(":")[0]
      message = f"{head}: {message.strip().splitlines()[-1].strip()}"
    errors.fail(f"{errors.one_line(message)} (--helpshort lists the flags)")
  except (AttributeError, KeyError) as e:  # ml_collections: no such key
    errors.fail(_unknown_override(argv, e))


def _config():
  """--config, loaded: a missing file is a one-line error, not a traceback."""
  spec = config_flags.get_config_filename(FLAGS["config"])
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    raise errors.ConfigError(f"--config {spec}: no such file {path!r} (the configs are in "
                             "configs/*.py)")
  return FLAGS.config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_quiet_orbax)
  config = _config()
  split = None
  if FLAGS.distributed:
    jax.distributed.initialize()
  else:
    errors.stop_on_sigterm()
    topology.hide_absent_accelerators()
    one_device_mode = FLAGS.mode in ("navigate", "edit")
    split = parallel.split_cpu(FLAGS.cpu_devices or int(one_device_mode),
                               config.train.batch_size)
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               parallel.describe_devices(split))
  if FLAGS.mode in _WORKDIR_OF and not FLAGS.workdir:
    raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir ({_WORKDIR_OF[FLAGS.mode]})")
  if FLAGS.mode == "train":
    from cldis_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, FLAGS.workdir,
                             allow_config_change=FLAGS.allow_config_change)
  elif FLAGS.mode == "evaluate":
    from cldis_jax import eval_report, evaluate  # pylint: disable=g-import-not-at-top
    print(eval_report.format_table(evaluate.run(config, FLAGS.workdir)))
  elif FLAGS.mode == "navigate":
    from cldis_jax import navigate  # pylint: disable=g-import-not-at-top
    result = navigate.run(config, FLAGS.workdir)
    print(f"navigation: held-out reconstructor accuracy {result['accuracy']:.3f} "
          f"over {result['num_directions']} directions; {result['grid']}")
  elif FLAGS.mode == "edit":
    from cldis_jax import edit  # pylint: disable=g-import-not-at-top
    if FLAGS.images:
      config.edit.images = tuple(FLAGS.images)
    print("\n".join(edit.run(config, FLAGS.workdir)["files"]))
  elif FLAGS.mode == "train_latent":
    from cldis_jax import train_latent  # pylint: disable=g-import-not-at-top
    result = train_latent.run(config, FLAGS.workdir)
    print(f"latent DDIM: step {result['step']}/{result['num_steps']} ({result['status']}), "
          f"loss {result['train'].get('loss', float('nan')):.4f}; {result.get('samples', '')}")
  elif FLAGS.mode == "sample":
    from cldis_jax import sample  # pylint: disable=g-import-not-at-top
    print("\n".join(sample.run(config, FLAGS.workdir)["files"]))
  elif FLAGS.mode == "study":
    from cldis_jax import study  # pylint: disable=g-import-not-at-top
    study.run(config, FLAGS.workdir)
    print(open(os.path.join(FLAGS.workdir, "results.md")).read())
  elif FLAGS.mode == "summary":
    from cldis_jax import summary  # pylint: disable=g-import-not-at-top
    print(summary.parameter_table(config.model, FLAGS.summary_depth))
  elif FLAGS.mode == "data":
    from cldis_jax.data import preview  # pylint: disable=g-import-not-at-top
    print(preview.describe(config, FLAGS.workdir or "."))
  elif FLAGS.mode == "compile":
    from cldis_jax import compile_check, compile_report  # pylint: disable=g-import-not-at-top
    results = compile_check.run(config, FLAGS.workdir)
    print("\n\n".join(compile_report.format_table(r) for r in results))
    compile_report.require_fit(config, results)


if __name__ == "__main__":
  app.run(errors.reported(main), flags_parser=_parse_flags)
