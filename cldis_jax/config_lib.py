"""Configs: loading a config file, clear errors for keys that nothing
understands and for sizes out of range, what a resumed training may change,
and overrides in dotted form.

Experiment files in `configs/` start from `base_config()` (every key with its
default: `defaults.py`) and override a few fields, so a config reads like an
experiment description and a typo in a key fails loudly.
"""

import difflib
import importlib.util
import os
from typing import Iterable, Mapping

import ml_collections

from cldis_jax import errors
from cldis_jax.defaults import base_config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`path/to/config.py[:arg]` -> `get_config(arg)`, as `--config` does."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file {path!r} does not exist (from {spec!r})")
  module_spec = importlib.util.spec_from_file_location("_cldis_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def check_known_keys(given: Mapping, valid: Iterable[str], where: str) -> None:
  """Raises ValueError naming each unknown key of `given` and its closest valid ones."""
  valid = sorted(valid)
  problems = []
  for key in given:
    if key not in valid:
      close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
      hint = f"did you mean {', '.join(close)}?" if close else "no close match"
      problems.append(f"{where}.{key} ({hint})")
  if problems:
    raise errors.ConfigError("unknown config key(s): " + "; ".join(problems)
                             + f". Valid keys of {where}: {', '.join(valid)}")


# Sizes and cadences checked at start-up, before anything compiles, section
# by section: each must be an integer of at least the given value (0 means
# "never" for cadences).
_MINIMUMS = {
    "model": dict(image_size=8, in_channels=1, latent_dim=1),
    "model.diffae": dict(base_channels=1, num_res_blocks=1, enc_num_res_blocks=1, num_heads=1,
                         embed_dim=1, z_dim=1),
    "model.vae": dict(hidden_channels=1, hidden_dim=1),
    "diffusion": dict(num_timesteps=1, sample_steps=1),
    "train": dict(batch_size=1, num_steps=1, log_every=1, checkpoint_every=0,
                  keep_checkpoints=1),
    "samples": dict(every=0, num_images=1, traversal_steps=1),
    "data": dict(num_threads=1, prefetch=0),
    "evaluate": dict(every=0, encode_batch=1, dci_workers=0),
    "evaluate.fid": dict(num_images=2, batch_size=1, precision_recall_images=0),
    "navigate": dict(batch_size=1, num_steps=1, log_every=1, checkpoint_every=1,
                     keep_checkpoints=1, reference_images=2),
    "edit": dict(num_strengths=1, invert_steps=1, decode_steps=1),
    "latent.net": dict(hidden_channels=1, num_layers=1, time_embed_channels=2),
    "latent": dict(num_timesteps=1, num_images=0, batch_size=1, num_steps=1, log_every=1,
                   checkpoint_every=1, keep_checkpoints=1),
    "sample": dict(num_images=1, latent_steps=1, image_steps=1, batch_size=1, edit_images=0,
                   quality_images=4),
}
MINIMUM_VALUES = {f"{section}.{key}": low
                  for section, keys in _MINIMUMS.items() for key, low in keys.items()}


def check_values(config, where: str = "config") -> None:
  """ConfigError naming every size or cadence below its minimum (MINIMUM_VALUES)."""
  flat = flatten(config.to_dict())
  bad = [f"{key} = {flat[key]!r} (valid: an integer >= {low})"
         for key, low in MINIMUM_VALUES.items()
         if key in flat and (isinstance(flat[key], bool) or not isinstance(flat[key], int)
                             or flat[key] < low)]
  if bad:
    raise errors.ConfigError(f"{where}: " + "; ".join(bad))


def check_config(config, reference=None, where: str = "config") -> None:
  """Every key of `config` must exist in `base_config()` (recursively; an
  empty section there, `study.variants`, takes any keys), and every size and
  cadence must be in range."""
  top = reference is None
  reference = base_config() if top else reference
  check_known_keys(config, reference.keys(), where)
  for key, value in config.items():
    if (isinstance(value, ml_collections.ConfigDict)
        and isinstance(reference[key], ml_collections.ConfigDict) and reference[key]):
      check_config(value, reference[key], f"{where}.{key}")
  if top:
    check_values(config, where)


# Keys a resumed training may change: when things happen and what is measured
# or drawn, never what is trained. A prefix covers a whole section.
RESUMABLE_KEYS = ("train.num_steps", "train.log_every", "train.checkpoint_every",
                  "train.keep_checkpoints", "train.async_checkpoints", "data.num_threads",
                  "data.prefetch", "data.cache_mb", "data.cache_dir", "samples.", "navigate.",
                  "edit.", "evaluate.", "study.", "compile.", "latent.", "sample.")


def flatten(tree: Mapping, prefix: str = "") -> dict:
  """{"a": {"b": v}} -> {"a.b": v}, lists as tuples (configs and their JSON alike)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
  return out


def training_changes(stored, current) -> list[str]:
  """"key: old -> new" for every key outside RESUMABLE_KEYS whose value in
  `current` differs from `stored` (the config a checkpoint was trained with).
  A key that one of them lacks counts at its default: a key added since the
  checkpoint was written changes nothing while it keeps its default. Under a
  cosine learning rate, which decays to 0 at train.num_steps, the number of
  steps is trained too."""
  old, new = flatten(stored.to_dict()), flatten(current.to_dict())
  missing = object()
  defaults = flatten(base_config().to_dict())
  decays = old.get("optim.schedule") == "cosine"
  out = []
  for key in sorted(set(old) | set(new)):
    resumable = key.startswith(RESUMABLE_KEYS) or key in RESUMABLE_KEYS
    if resumable and not (decays and key == "train.num_steps"):
      continue
    a, b = old.get(key, missing), new.get(key, missing)
    default = defaults.get(key, missing)
    at_default = lambda v, other: v is missing and other == default
    if a != b and not (at_default(a, b) or at_default(b, a)):
      show = lambda v: "(absent)" if v is missing else repr(v)
      out.append(f"{key}: {show(a)} -> {show(b)}")
  return out


def nested(flat: Mapping[str, object]) -> dict:
  """{"a.b.c": v} -> {"a": {"b": {"c": v}}} (config overrides in dotted form)."""
  out: dict = {}
  for key, value in flat.items():
    *parents, leaf = key.split(".")
    node = out
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def apply_overrides(config, overrides: Mapping, where: str = "overrides"):
  """A copy of `config` with nested `overrides` set; unknown keys raise a
  ValueError naming them and their closest valid ones."""
  out = config.copy_and_resolve_references()

  def merge(node, tree, path):
    check_known_keys(tree, node.keys(), path)
    for key, value in tree.items():
      if isinstance(value, Mapping) and isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value, f"{path}.{key}")
      else:
        node[key] = tuple(value) if isinstance(value, list) else value

  merge(out, overrides, where)
  return out


def from_dict(tree: Mapping) -> ml_collections.ConfigDict:
  """A ConfigDict from plain data (e.g. the JSON stored with a checkpoint);
  lists become tuples, as config files write them."""
  def fix(v):
    if isinstance(v, Mapping):
      return {k: fix(x) for k, x in v.items()}
    return tuple(fix(x) for x in v) if isinstance(v, list) else v
  return ml_collections.ConfigDict(fix(dict(tree)))


def disentanglement64_config(data_name: str, *, channels: int = 3,
                             latent_dim: int = 10) -> ml_collections.ConfigDict:
  """The 64x64 recipe of configs/{shapes3d,dsprites,mpi3d,cars3d,celeba64}.py.

  Published for CL-Dis: nothing (docs/method.md). Our
  choices: the official Diff-AE ffhq64 networks (the only published 64-px
  Diff-AE), bf16 compute, global batch 64, 250k steps (16M samples), d_v = 10
  as in disentanglement_lib's models, the Burgess beta-VAE with a Bernoulli
  likelihood, and the default diffusion-feedback controller.
  """
  config = base_config()
  config.model.update(dict(image_size=64, in_channels=channels, latent_dim=latent_dim,
                           dtype="bfloat16"))
  config.data.name = data_name
  config.train.update(dict(batch_size=64, num_steps=250_000, log_every=500,
                           checkpoint_every=10_000))
  config.samples.every = 25_000
  return config
