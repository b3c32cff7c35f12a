"""Import official Diff-AE (phizaz/diffae) PyTorch weights into our DiffAE tree.

The key layout is phizaz/diffae's (`model/unet.py`, `model/unet_autoenc.py`).
A Lightning `last.ckpt` holds `state_dict` with `model.*` (raw) and
`ema_model.*` (EMA) weights; we import the EMA weights, as every official
inference path does. A plain name -> array dict (`.npz`, or a `.pt`/`.pth`
state dict) with the inner keys works too.

Every PyTorch key maps to exactly one leaf of our tree and back. Coverage is
checked both ways: a missing, unexpected or mis-shaped key is an error that
names it (the official notebooks load with `strict=False`, which hides them).

  python -m cldis_jax.convert --checkpoint ffhq128_autoenc_130M/last.ckpt \\
      --config configs/ffhq.py:128 --output /tmp/ffhq128_params
"""

import os
import re
from typing import Any, Mapping
import zipfile

import numpy as np
from flax import traverse_util

from cldis_jax import errors

# Our submodule names -> the official ones, inside a block.
_LAYER_NAMES = {
    "in_norm": "in_layers.0", "in_conv": "in_layers.2", "emb_proj": "emb_layers.1",
    "cond_proj": "cond_emb_layers.1", "out_norm": "out_layers.0",
    "out_conv": "out_layers.3", "skip": "skip_connection",
    "norm": "norm", "qkv": "qkv", "proj_out": "proj_out",
}
# Top-level heads differ between the UNet (out.0 GN, out.2 conv) and the encoder
# (out.0 GN, out.3 conv after the pooling).
_HEAD_NAMES = {
    "unet": {"out_norm": "out.0", "out_conv": "out.2"},
    "encoder": {"out_norm": "out.0", "out_conv": "out.3"},
}
_BLOCK = re.compile(r"(input_blocks|output_blocks)_(\d+)_(\d+)|middle_block_(\d+)|time_embed_(\d+)")
_ATTENTION_LAYERS = ("qkv", "proj_out")  # Conv1d (O, I, 1) in PyTorch, Dense here
LATENT_PREFIX = "latent_net."  # the latent DDIM of *_latent checkpoints (latent_from_torch)
# The latent net's buffers of z_sem's training-set moments (z-scoring).
LATENT_STATS = ("conds_mean", "conds_std")


class CheckpointMismatchError(errors.UserError, ValueError):
  """The checkpoint's keys or shapes do not match the model built from the config."""


def torch_key(path: tuple[str, ...]) -> str:
  """Our leaf path, e.g. ('unet', 'input_blocks_4_0', 'in_conv', 'kernel'), -> torch key."""
  top, *modules, leaf = path
  parts = [] if top == "unet" else ["encoder"]
  for i, name in enumerate(modules):
    m = _BLOCK.fullmatch(name)
    if m and m.group(1):
      parts.append(f"{m.group(1)}.{m.group(2)}.{m.group(3)}")
    elif m and m.group(4):
      parts.append(f"middle_block.{m.group(4)}")
    elif m:
      parts.append(f"time_embed.time_embed.{m.group(5)}")
    elif i == 0:
      parts.append(_HEAD_NAMES[top][name])
    else:
      parts.append(_LAYER_NAMES[name])
  parts.append("bias" if leaf == "bias" else "weight")
  return ".".join(parts)


def latent_torch_key(path: tuple[str, ...]) -> str:
  """A latent-net leaf, e.g. ('layers_3', 'linear_emb', 'kernel'), -> its
  official key without the prefix, 'layers.3.linear_emb.weight'."""
  *modules, leaf = path
  parts = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
  return ".".join(parts + ["bias" if leaf == "bias" else "weight"])


_INCEPTION_LEAVES = {"kernel": "conv.weight", "scale": "bn.weight", "bias": "bn.bias",
                     "mean": "bn.running_mean", "var": "bn.running_var"}


def inception_torch_key(path: tuple[str, ...]) -> str:
  """An FID Inception leaf, e.g. ('Mixed_5b', 'branch1x1', 'scale'), -> its
  pytorch-fid key, 'Mixed_5b.branch1x1.bn.weight'."""
  *modules, leaf = path
  return ".".join(modules + [_INCEPTION_LEAVES[leaf]])


def inception_from_torch(state_dict: Mapping[str, Any], template) -> dict:
  """pytorch-fid's InceptionV3 state dict (`pt_inception-2015-12-05-*.pth`:
  keys `Conv2d_1a_3x3.conv.weight`, ...) -> our FID Inception params; the
  classifier (`fc.*`) and the batch norms' step counters are left out."""
  kept = {k: v for k, v in state_dict.items()
          if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  return from_torch(kept, template, inception_torch_key)


def _is_attention_proj(path) -> bool:
  return len(path) >= 2 and path[-2] in _ATTENTION_LAYERS


def to_torch_layout(path, value):
  """One of our leaves -> the official tensor layout."""
  value = np.asarray(value)
  if path[-1] != "kernel":
    return value  # GroupNorm scale/bias and every bias keep their layout
  if value.ndim == 4:  # conv (kh, kw, I, O) -> (O, I, kh, kw)
    return value.transpose(3, 2, 0, 1)
  out = value.T  # Dense (I, O) -> Linear (O, I)
  return out[..., None] if _is_attention_proj(path) else out


def to_flax_layout(path, value):
  """One official tensor -> the layout of our leaf at `path`."""
  value = np.asarray(value)
  if path[-1] != "kernel":
    return value
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if _is_attention_proj(path):
    value = value[..., 0]
  return value.T


def _torch_shape(path, shape):
  return to_torch_layout(path, np.empty(shape, np.float32)).shape


def expected_keys(template, key_fn=torch_key) -> dict[str, tuple[int, ...]]:
  """Every official key (and its shape) that a DiffAE parameter tree (or,
  with `latent_torch_key`, a latent net's) corresponds to."""
  flat = traverse_util.flatten_dict(template)
  return {key_fn(p): _torch_shape(p, v.shape) for p, v in flat.items()}


def _describe(problems, what, limit=20):
  shown = problems[:limit]
  more = f" ... and {len(problems) - limit} more" if len(problems) > limit else ""
  return f"{len(problems)} {what}: " + ", ".join(shown) + more


def from_torch(state_dict: Mapping[str, Any], template, key_fn=torch_key) -> dict:
  """Official inner-model state dict -> our DiffAE params, with exact coverage.

  `template` is the DiffAE parameter tree (arrays or ShapeDtypeStructs), e.g.
  `models.abstract_params(models)["diffae"]`; with `key_fn=latent_torch_key`,
  a latent net's (`latent_from_torch`).
  """
  flat = traverse_util.flatten_dict(template)
  by_key = {key_fn(p): p for p in flat}
  missing = sorted(k for k in by_key if k not in state_dict)
  unexpected = sorted(k for k in state_dict if k not in by_key)
  misshaped = []
  for key, path in by_key.items():
    if key in state_dict:
      want = _torch_shape(path, flat[path].shape)
      got = tuple(np.shape(state_dict[key]))
      if got != want:
        misshaped.append(f"{key} has shape {got}, the config expects {want}")
  if missing or unexpected or misshaped:
    lines = ["the checkpoint does not match the model built from the config"]
    if missing:
      lines.append(_describe(missing, "missing key(s)"))
    if unexpected:
      lines.append(_describe(unexpected, "unexpected key(s)"))
    if misshaped:
      lines.append(_describe(misshaped, "mis-shaped key(s)"))
    lines.append("Check that the config's resolution and widths are those the "
                 "checkpoint was trained with (e.g. configs/ffhq.py:128).")
    raise CheckpointMismatchError("\n  ".join(lines))
  out = {p: to_flax_layout(p, np.asarray(state_dict[k], np.float32))
         for k, p in by_key.items()}
  return traverse_util.unflatten_dict(out)


def to_torch(params, key_fn=torch_key) -> dict[str, np.ndarray]:
  """Our DiffAE params -> the official inner-model state dict (numpy arrays)."""
  return {key_fn(p): to_torch_layout(p, v)
          for p, v in traverse_util.flatten_dict(params).items()}


# The official MLPLNAct keeps its time projection twice in the state dict: as
# `linear_emb` and as `cond_layers.1` (the same tensor inside a Sequential).
_ALIAS = re.compile(r"(layers\.\d+)\.cond_layers\.1\.(weight|bias)")


def latent_to_torch(params) -> dict[str, np.ndarray]:
  """Our latent-net params -> the official `latent_net` state dict (without
  the prefix), the aliased `cond_layers.1.*` keys included."""
  out = to_torch(params, latent_torch_key)
  for key in list(out):
    if ".linear_emb." in key:
      out[key.replace(".linear_emb.", ".cond_layers.1.")] = out[key]
  return out


def latent_from_torch(state_dict: Mapping[str, Any], template) -> dict:
  """Official `latent_net` state dict (without the prefix) -> our latent-net
  params, every key covered; each `cond_layers.1.*` must equal its
  `linear_emb.*` (they are one tensor in the official module)."""
  plain = {}
  for key, value in state_dict.items():
    alias = _ALIAS.fullmatch(key)
    if alias is None:
      plain[key] = value
      continue
    twin = f"{alias.group(1)}.linear_emb.{alias.group(2)}"
    if twin in state_dict and not np.array_equal(np.asarray(value), np.asarray(state_dict[twin])):
      raise CheckpointMismatchError(f"{key} differs from {twin}; in the official module they "
                                    "are the same tensor")
  return from_torch(plain, template, latent_torch_key)


def latent_state_dict(raw: Mapping[str, Any], prefix: str = "ema_model."):
  """(the `latent_net.*` weights without their prefix, {conds_mean, conds_std}
  flattened, or None if absent) of a loaded Lightning checkpoint or state
  dict; ({}, None) if it has no latent net."""
  if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
    raw = raw["state_dict"]
  lead = prefix + LATENT_PREFIX if any(k.startswith(prefix) for k in raw) else LATENT_PREFIX
  weights = {k[len(lead):]: _to_numpy(v) for k, v in raw.items() if k.startswith(lead)}
  stats = {k: _to_numpy(raw[k]).reshape(-1) for k in LATENT_STATS if k in raw}
  return weights, (stats if len(stats) == len(LATENT_STATS) else None)


def inner_state_dict(raw: Mapping[str, Any], prefix: str = "ema_model.",
                     source: str = "<dict>") -> dict[str, np.ndarray]:
  """Select the autoencoder weights from a loaded checkpoint.

  Accepts a Lightning checkpoint dict (`{'state_dict': ...}`), its state dict
  (keys `model.*`, `ema_model.*`, `x_T`, ...), or an inner dict with no prefix.
  The `latent_net.*` weights of latent checkpoints are dropped.
  """
  if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
    raw = raw["state_dict"]
  if any(k.startswith(("model.", "ema_model.")) for k in raw):
    selected = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    if not selected:
      found = sorted({k.split(".", 1)[0] for k in raw})
      raise CheckpointMismatchError(
          f"{source}: no '{prefix}*' keys; top-level names found: {found}")
  else:
    selected = dict(raw)
  return {k: _to_numpy(v) for k, v in selected.items() if not k.startswith(LATENT_PREFIX)}


def _to_numpy(v):
  if hasattr(v, "detach"):  # a torch tensor
    return v.detach().cpu().float().numpy()
  return np.asarray(v)


def load_state_dict(path: str, prefix: str = "ema_model.") -> dict[str, np.ndarray]:
  """Read an official `.ckpt`/`.pt`/`.pth` (torch, weights only) or an `.npz`."""
  if not os.path.exists(path):
    raise errors.NoCheckpointError(f"checkpoint {path!r} does not exist. Official Diff-AE "
                                   "checkpoints are linked from the phizaz/diffae README.")
  if path.endswith(".npz"):
    if not zipfile.is_zipfile(path):
      raise CheckpointMismatchError(
          f"{path!r} is not an .npz archive (numpy's zip of .npy arrays); convert reads "
          "an official Diff-AE .ckpt/.pt/.pth (PyTorch) or an .npz of its state dict "
          "(numpy.savez of name -> array)")
    with np.load(path, allow_pickle=False) as data:
      raw = {k: data[k] for k in data.files}
  else:
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"reading {path!r} needs PyTorch: pip install "
                        "'cldis_jax[torch]' (or convert it to .npz elsewhere)") from e
    try:
      raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad or unsafe files
      raise CheckpointMismatchError(
          f"{path!r} could not be read as a weights-only PyTorch checkpoint "
          f"({type(e).__name__}: {e}). Only tensors and plain containers are "
          "loaded; arbitrary pickled objects are refused on purpose.") from e
  if not isinstance(raw, Mapping):
    raise CheckpointMismatchError(f"{path!r} holds a {type(raw).__name__}, "
                                  "not a state dict")
  return inner_state_dict(raw, prefix, source=path)


def load_official(path: str, diffae_template, prefix: str = "ema_model.") -> dict:
  """Official checkpoint file -> our DiffAE params (the EMA weights by default)."""
  state_dict = load_state_dict(path, prefix)
  try:
    return from_torch(state_dict, diffae_template)
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f"{path}: {e}") from None


def load_official_latent(path: str, template, prefix: str = "ema_model."):
  """An official *_latent checkpoint file -> (our latent-net params, its
  code mean, its code std), or None if the file has no latent net."""
  import torch  # pylint: disable=g-import-not-at-top  (latent checkpoints are .ckpt files)
  raw = torch.load(path, map_location="cpu", weights_only=True)
  weights, stats = latent_state_dict(raw, prefix)
  if not weights:
    return None
  if stats is None:
    raise CheckpointMismatchError(f"{path}: latent_net weights without {' and '.join(LATENT_STATS)}")
  try:
    params = latent_from_torch(weights, template)
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f"{path}: {e}") from None
  return params, stats["conds_mean"], stats["conds_std"]


def check_official(config) -> None:
  """The official Diff-AE weights predict eps (a config that reads the
  denoiser's output as v or x0 would decode them wrongly), pool the
  encoder's last map by its mean (a flatten head has no weights there) and
  only scale by the code (a shift would have none either)."""
  prediction = config.diffusion.get("prediction", "eps")
  if prediction != "eps":
    raise errors.ConfigError(f"diffusion.prediction = {prediction!r}, but official Diff-AE "
                             f"checkpoints predict eps; use diffusion.prediction='eps'")
  pool = config.model.diffae.get("enc_pool", "mean")
  if pool != "mean":
    raise errors.ConfigError(f"model.diffae.enc_pool = {pool!r}, but official Diff-AE "
                             "encoders average their last map; use model.diffae.enc_pool='mean'")
  if config.model.diffae.get("cond_shift", False):
    raise errors.ConfigError("model.diffae.cond_shift = True, but official Diff-AE blocks only "
                             "scale by the code; use model.diffae.cond_shift=False")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from cldis_jax import latent, models  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  check_official(config)
  nets = models.build_models(config.model)
  template = models.abstract_params(nets)["diffae"]
  tree = {"diffae": load_official(FLAGS.checkpoint, template, FLAGS.prefix)}
  described = f"{len(expected_keys(template))} tensors"
  if not FLAGS.checkpoint.endswith(".npz"):
    net = latent.build(config, nets.code_dim)
    found = load_official_latent(FLAGS.checkpoint, jax.eval_shape(
        lambda: latent.init_state(config, net, jax.random.key(0), 0, 1, 0).params), FLAGS.prefix)
    if found is not None:
      tree["latent"] = dict(zip(("params", "mean", "std"), found))
      described += " and the latent DDIM"
  n = sum(np.size(x) for x in jax.tree.leaves(tree))
  output = os.path.abspath(FLAGS.output)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(output, tree)
    checkpointer.wait_until_finished()
  print(f"converted {described} ({n:,} numbers) from {FLAGS.checkpoint} -> {output}")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  FLAGS = flags.FLAGS
  config_flags.DEFINE_config_file("config", None, "Config whose model matches the checkpoint.")
  flags.DEFINE_string("checkpoint", None, "Official last.ckpt, state-dict .pt/.pth, or .npz.")
  flags.DEFINE_string("output", None, "Directory for the converted params (orbax).")
  flags.DEFINE_string("prefix", "ema_model.", "Which weights of a Lightning checkpoint.")
  flags.mark_flags_as_required(["config", "checkpoint", "output"])
  app.run(errors.reported(main))
