"""`--mode=compile`: compile a run's programs for a Cloud TPU topology on any
machine, and say whether they fit it and how fast they could at best run.

For each topology of `compile.topology` (comma-separated, `topology.FORMS`)
and each program of `compile.programs` (`programs.py`: the train step, the
navigation step, evaluation's encoder, edit's DDIM inversion and decoding,
evaluation's traversals) the program is lowered and compiled by the TPU
compiler, and `<workdir>/compile/<topology>.json` gets, per device:

- bytes of arguments, outputs, temporaries, outputs aliased with (donated)
  arguments and generated code, from XLA's memory analysis; their total
  (arguments + outputs - aliased + temporaries + code) against the chip's HBM:
  `fits` (with `compile.headroom` to spare) and the headroom left;
- the arguments' own bytes (state, params, images...) from their shapes;
- FLOPs, bytes accessed and transcendentals per call, from XLA's cost
  analysis, and the roofline bound on a call's time, max(FLOPs / peak bf16
  FLOP/s, bytes accessed / HBM bandwidth) (`topology.CHIPS`); for the train
  step, FLOPs per image and the days `train.num_steps` steps take at that
  bound;
- compile time, devices, host processes, per-device batch.

These are compile-time figures and bounds, not measured speeds. A program
the compiler cannot fit in HBM is a result (`fits: false`, the bytes it asked
for and by how much they exceed the chip), not an error.
`compile.find_max_batch` searches the largest per-device train batch that
fits with the headroom, by compiling (doubling, then bisection).
"""

import importlib.metadata
import json
import math
import os
import re
import time

from absl import logging
import jax

from cldis_jax import errors, models as models_lib, programs, topology, writer as writer_lib

SUBDIR = "compile"
MAX_SEARCH_BATCH = 4096  # per device: find_max_batch doubles up to here


def topology_names(spec: str) -> list[str]:
  names = [n.strip() for n in str(spec).split(",") if n.strip()]
  if not names:
    raise errors.ConfigError(f"compile.topology is empty; give one or more of: "
                             f"{topology.FORMS}")
  return names


def json_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, SUBDIR, f"{name.replace(':', '_')}.json")


_SIZE = re.compile(r"([\d.]+)\s*([KMGTP]i?)?B?\b")


def _size_bytes(text: str) -> float:
  number, unit = _SIZE.fullmatch(text.strip()).groups()
  return float(number) * 1024.0 ** ("_KMGTP".index(unit[0]) if unit else 0)


def out_of_memory(error) -> dict | None:
  """{'required_bytes', 'available_bytes', 'excess_bytes', 'error'} of a
  compile that ran out of HBM (None for any other error). The TPU compiler
  words it as "... required for HLO temporaries (3.92T) exceeds available
  HBM (15.75G)" or "Used 20.5G of 15.75G hbm"."""
  text = errors.one_line(error)
  if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
    return None
  found = (re.search(r"\(([\d.]+[KMGTP]?)\) exceeds available HBM \(([\d.]+[KMGTP]?)\)", text)
           or re.search(r"Used ([\d.]+[KMGTP]?) of ([\d.]+[KMGTP]?) hbm", text))
  out = dict(error=text[:500])
  if found:
    required, available = (_size_bytes(g) for g in found.groups())
    out.update(required_bytes=required, available_bytes=available,
               excess_bytes=required - available)
  return out


def shard_bytes(tree) -> int:
  """Bytes one device holds of a pytree of sharded ShapeDtypeStructs (the
  most any device holds, for uneven shardings)."""
  total = 0
  for s in jax.tree.leaves(tree):
    shape = s.sharding.shard_shape(s.shape) if s.sharding is not None else s.shape
    total += math.prod(shape) * s.dtype.itemsize
  return total


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  return dict(flops=float(cost.get("flops", 0.0)),
              bytes_accessed=float(cost.get("bytes accessed", 0.0)),
              transcendentals=float(cost.get("transcendentals", 0.0)))


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  out = dict(argument=m.argument_size_in_bytes, output=m.output_size_in_bytes,
             temp=m.temp_size_in_bytes, alias=m.alias_size_in_bytes,
             code=m.generated_code_size_in_bytes)
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["code"]
  return out


def judge(record: dict, chip, headroom: float) -> dict:
  """`record` with the HBM verdict and the roofline bound for `chip` (None: none)."""
  if chip is None:
    return dict(record, fits=None)
  hbm = chip.hbm_bytes
  if "bytes" not in record:  # the compiler ran out of memory
    return dict(record, hbm_bytes=hbm, fits=False, fits_compiler=False, headroom=None)
  total = record["bytes"]["total"]
  out = dict(record, hbm_bytes=hbm, fits_compiler=True, fits=total <= (1 - headroom) * hbm,
             headroom=1 - total / hbm)
  compute_s = record["flops"] / chip.peak_bf16_flops
  memory_s = record["bytes_accessed"] / chip.hbm_bytes_per_s
  out.update(roofline_s=max(compute_s, memory_s),
             bound="compute" if compute_s >= memory_s else "memory")
  return out


def measure(program: programs.Program, chip=None, headroom: float = 0.1,
            dump_to: str = "") -> dict:
  """Lowers and compiles `program`: the figures of the module docstring.
  `dump_to`: a folder for XLA's dumps, with each pass's start and end time
  (benchmarks/compile_passes.py sums them)."""
  record = dict(program=program.name, devices=program.devices, batch=program.batch,
                per_device_batch=program.batch / program.devices,
                argument_bytes={k: shard_bytes(v) for k, v in program.arguments.items()})
  t0 = time.perf_counter()
  lowered = program.lower()
  t1 = time.perf_counter()
  record["lower_s"] = t1 - t0
  try:
    compiled = lowered.compile(dict(xla_dump_to=os.path.join(dump_to, program.name),
                                    xla_dump_module_metadata=True) if dump_to else None)
  except Exception as e:  # pylint: disable=broad-except
    oom = out_of_memory(e)
    if oom is None:
      raise
    record.update(compile_s=time.perf_counter() - t1, out_of_memory=oom)
    return judge(record, chip, headroom)
  record["compile_s"] = time.perf_counter() - t1
  record.update(bytes=_memory(compiled), **_cost(compiled))
  return judge(record, chip, headroom)


def add_training_time(record: dict, config) -> dict:
  """The train step's FLOPs per image, and days to `train.num_steps` at the bound."""
  out = dict(record)
  if record.get("flops"):
    out["flops_per_image"] = record["flops"] / record["per_device_batch"]
  if record.get("roofline_s"):
    out.update(num_steps=config.train.num_steps,
               days_at_bound=config.train.num_steps * record["roofline_s"] / 86400)
  return out


def max_batch(config, models, devices, chip, headroom: float) -> dict:
  """The largest per-device train batch whose step fits with `headroom`:
  1, 2, 4, ... until one does not fit (or MAX_SEARCH_BATCH), then bisection."""
  tried = {}

  def fits(per_device: int) -> bool:
    r = measure(programs.train(config, models, devices, per_device * len(devices)), chip,
                headroom)
    tried[per_device] = dict(fits=r["fits"], total_bytes=r.get("bytes", {}).get("total"),
                             compile_s=r["compile_s"])
    logging.info("  per-device batch %d: %s", per_device, "fits" if r["fits"] else "does not fit")
    return bool(r["fits"])

  if not fits(1):
    return dict(per_device_batch=0, global_batch=0, tried=tried, capped=False)
  low = 1
  while low < MAX_SEARCH_BATCH and fits(2 * low):
    low *= 2
  high = 2 * low
  while high - low > 1 and low < MAX_SEARCH_BATCH:
    mid = (low + high) // 2
    low, high = (mid, high) if fits(mid) else (low, mid)
  return dict(per_device_batch=low, global_batch=low * len(devices), tried=tried,
              capped=low >= MAX_SEARCH_BATCH)


def _versions() -> dict:
  out = {}
  for package in ("jax", "jaxlib", "libtpu"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def check_topology(config, models, name: str, devices) -> dict:
  """Every program of `compile.programs` compiled for topology `name`'s `devices`."""
  c = config.compile
  chip = topology.chip_of(devices[0])
  result = dict(topology=name, device_kind=devices[0].device_kind, devices=len(devices),
                processes=len({d.process_index for d in devices}),
                chip=None if chip is None else vars(chip), headroom=c.headroom,
                config=dict(image_size=config.model.image_size, dtype=config.model.dtype,
                            batch_size=config.train.batch_size,
                            num_steps=config.train.num_steps),
                versions=_versions(), programs={})
  for name_ in c.programs:
    logging.info("compiling %s for %s (%d devices)", name_, name, len(devices))
    record = measure(programs.build(name_, config, models, devices), chip, c.headroom,
                     c.dump_to and os.path.join(c.dump_to, name.replace(":", "_")))
    if name_ == "train":
      record = add_training_time(record, config)
    result["programs"][name_] = record
  if c.find_max_batch:
    logging.info("searching the largest per-device train batch for %s", name)
    result["max_batch"] = max_batch(config, models, devices, chip, c.headroom)
  return result


def run(config, workdir: str) -> list[dict]:
  """`--mode=compile`: every topology of `compile.topology`; writes one JSON
  each and returns their contents."""
  programs.check_names(config.compile.programs)
  if not 0 <= config.compile.headroom < 1:
    raise errors.ConfigError(f"compile.headroom = {config.compile.headroom}; valid: a "
                             "fraction in [0, 1)")
  # every name checked, and every slice built, before the first compile
  slices = {name: topology.devices(name) for name in topology_names(config.compile.topology)}
  models = models_lib.build_models(config.model)
  results = []
  for name, devices in slices.items():
    result = check_topology(config, models, name, devices)
    path = json_path(workdir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    writer_lib.write_atomic(path, json.dumps(result, indent=1))
    result["path"] = path
    results.append(result)
  return results
