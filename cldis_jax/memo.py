"""Jitted programs built once per process for the same config.

A builder like `train_step.make_train_step(config, models, mesh)` returns a
new `jax.jit` of a new closure, and JAX caches compilations per function
object: each call means tracing and compiling (or reading the persistent
cache) again. `per_config` keeps the built program for equal configs
(compared by content) and equal other arguments (hashed: the models, a
mesh), so a run started again in the same process (a notebook, the study
program's runs, resuming after a fault, the tests) reuses it.
"""

import collections
import functools
import json

# Per builder; the least recently used goes first. Few: an XLA:CPU train step
# of configs/test.py keeps ~0.35 GB alive (measured), and the programs worth
# keeping are those of a run started again, not every run of a process.
MAX_PROGRAMS = 2

# Keys that no memoised builder reads: when things happen, what is measured
# or drawn, where data is cached, the seed (the programs take their keys as
# arguments). Runs that differ only here share their programs.
IGNORED = ("seed", "study", "samples", "evaluate", "compile", "train.log_every",
           "train.checkpoint_every", "train.keep_checkpoints", "train.async_checkpoints",
           "data.num_threads", "data.prefetch", "data.cache_mb", "data.cache_dir")


def config_key(config) -> str:
  """The config's content but IGNORED, as canonical JSON."""
  tree = config.to_dict()
  for key in IGNORED:
    *parents, leaf = key.split(".")
    node = tree
    for p in parents:
      node = node.get(p, {})
    node.pop(leaf, None)
  return json.dumps(tree, sort_keys=True, default=repr)


def per_config(build):
  """`build(config, *args)` memoised on (config content, args). The builder
  gets its own copy of the config, so that a caller changing theirs later
  cannot change a kept program."""
  kept = collections.OrderedDict()

  @functools.wraps(build)
  def cached(config, *args):
    key = (config_key(config), args)
    if key in kept:
      kept.move_to_end(key)
    else:
      kept[key] = build(config.copy_and_resolve_references(), *args)
      if len(kept) > MAX_PROGRAMS:
        kept.popitem(last=False)
    return kept[key]

  cached.cache_clear = kept.clear
  return cached
