"""Where a step's time goes: XLA's own per-operation times, from a profiler
trace of a few steps, grouped by the HLO instruction that ran and by what it
computes.

  pip install xprof   # reads the trace; not a dependency of the package
  python benchmarks/profile_step.py --config configs/quickstart.py
  python benchmarks/profile_step.py --config configs/ffhq.py:64 --batch 8 \
      --config.model.dtype=float32 --steps 2

--part picks the step: `diffae` (encoder + UNet, eps loss, Adam: the step the
official PyTorch numbers measure), `cldis` (the whole closed-loop step) or
`sample` (20-step DDIM). Printed: the total time the operations took per step
(their sum; operations can overlap on a multi-threaded CPU), the top
instructions (name, kind, shape, the JAX op that made them) and the time per
kind of work: convolutions (with their gradients), the normalisation chain
(GroupNorm, SiLU, scale and shift, fused elementwise), attention, layout
copies, the optimizer and the rest. On one device unless --cpu_devices says
otherwise. One CPU device runs its convolutions on Eigen (cldis_jax.parallel),
whose work runs in thread-pool tasks that the trace does not tie to an
instruction, so they are missing from the sums;
`XLA_FLAGS=--xla_force_host_platform_device_count=1` keeps XLA's defaults
(YNNPACK convolutions, timed per instruction), as in the profiles of
docs/benchmarks.md.
"""

import collections
import glob
import json
import os
import re
import sys
import tempfile

from absl import app, flags
import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import step_benchmark  # noqa: E402  (the steps it times)

FLAGS = flags.FLAGS
flags.DEFINE_string("part", "diffae", "diffae | cldis | sample")
flags.DEFINE_integer("steps", 3, "Traced steps (after two warm-up steps).")
flags.DEFINE_integer("top", 10, "Instructions listed.")

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (\w[\w-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def instructions(hlo_text: str) -> dict[str, dict]:
  """name -> {shape, opcode, op_name, inside} for every instruction of the
  module; a fusion without metadata takes the first op_name inside its
  computation, and `inside` holds the opcodes it fuses."""
  first_op_name, opcodes, current, out = {}, collections.defaultdict(set), None, {}
  for line in hlo_text.splitlines():
    if line and not line.startswith(" ") and "{" in line:
      current = line.split()[0].lstrip("%") if not line.startswith("ENTRY") else line.split()[1]
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, opcode = m.groups()
    op_name = _OP_NAME.search(line)
    calls = _CALLS.search(line)
    out[name] = dict(shape=shape, opcode=opcode, op_name=op_name.group(1) if op_name else "",
                     calls=calls.group(1) if calls else None)
    opcodes[current].add(opcode)
    if op_name and current not in first_op_name:
      first_op_name[current] = op_name.group(1)
  for info in out.values():
    if not info["op_name"] and info["calls"]:
      info["op_name"] = first_op_name.get(info["calls"], "")
    info["inside"] = opcodes.get(info["calls"], set()) | {info["opcode"]}
  return out


def kind_of(name: str, info: dict) -> str:
  """What an instruction computes, from its name and the JAX op that made it."""
  path = info["op_name"].lower()
  if "conv_general_dilated" in path or "convolution" in info["inside"]:
    return "convolution (and its gradients)"
  if "attn" in path or "attention" in path:
    return "attention"
  if "norm" in path or "silu" in path or "logistic" in path:
    return "normalisation chain (GroupNorm, SiLU, scale/shift)"
  if "dot_general" in path:
    return "matmul (linear layers)"
  if name.startswith(("transpose", "copy")) or info["opcode"] in ("transpose", "copy"):
    return "layout copies"
  if "adam" in path or "clip" in path or "optax" in path or "opt_state" in path:
    return "optimizer"
  return "other"


def op_times(trace_dir: str) -> dict[str, float]:
  """hlo op name -> total microseconds in the trace (every event that names one)."""
  from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  data, _ = raw_to_tool_data.xspace_to_tool_data(files[-1:], "trace_viewer", {})
  totals = collections.Counter()
  for event in json.loads(data)["traceEvents"]:
    op = event.get("args", {}).get("hlo_op")
    if event.get("ph") == "X" and op:
      totals[op] += event.get("dur", 0.0)
  return totals


def _step(config, batch):
  """(jitted fn, args, chain) for --part, as step_benchmark times it."""
  from cldis_jax import models  # pylint: disable=g-import-not-at-top
  nets = models.build_models(config.model)
  size, channels = config.model.image_size, config.model.in_channels
  params = models.init_params(nets, jax.random.key(0))
  x0 = jax.random.uniform(jax.random.key(1), (batch, size, size, channels), minval=-1, maxval=1)
  if FLAGS.part == "diffae":
    step, tx = step_benchmark.diffae_step_fn(config, nets.diffae)
    return step, (params["diffae"], tx.init(params["diffae"]), x0, jax.random.key(2)), True
  if FLAGS.part == "sample":
    x_T = jax.random.normal(jax.random.key(3), x0.shape)
    return step_benchmark.sample_fn(config, nets.diffae, 20), (params["diffae"], x0, x_T), False
  from cldis_jax import parallel, train_step  # pylint: disable=g-import-not-at-top,reimported
  mesh = parallel.data_mesh()
  config.train.batch_size = batch
  state = train_step.init_state_on_mesh(config, nets, jax.random.key(0), mesh)
  step = train_step.make_train_step(config, nets, mesh)
  closed_loop = jax.jit(lambda s, x, r: (step(s, x, r)[0], x, r), donate_argnums=0)
  inputs = step_benchmark.step_inputs(config, x0, mesh)
  return closed_loop, (state, inputs, jax.random.key(4)), True


def main(argv):
  del argv
  config = step_benchmark.FLAGS.config
  batch = FLAGS.batch or config.train.batch_size
  from cldis_jax import parallel  # pylint: disable=g-import-not-at-top
  parallel.split_cpu(FLAGS.cpu_devices or 1, batch)  # one device: one stream of operations
  fn, args, chain = _step(config, batch)
  compiled = fn.lower(*args).compile()
  info = instructions(compiled.as_text())
  for _ in range(2):
    out = jax.block_until_ready(compiled(*args))
    args = out if chain else args
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    for _ in range(FLAGS.steps):
      out = jax.block_until_ready(compiled(*args))
      args = out if chain else args
    jax.profiler.stop_trace()
    times = op_times(trace_dir)
  per_step = {op: us / FLAGS.steps / 1e3 for op, us in times.items() if op in info}
  total = sum(per_step.values())
  print(f"{FLAGS.part}, batch {batch}, {jax.device_count()} device(s): operations sum to "
        f"{total:.1f} ms per step ({len(per_step)} instructions ran)")
  print(f"\ntop {FLAGS.top} instructions (ms per step, share):")
  for op, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
    i = info[op]
    print(f"  {ms:8.2f} ms {100 * ms / total:5.1f}%  {op:<28} {i['shape'][:28]:<28} "
          f"{i['op_name'][-90:]}")
  kinds = collections.Counter()
  for op, ms in per_step.items():
    kinds[kind_of(op, info[op])] += ms
  print("\nby kind of work:")
  for kind, ms in kinds.most_common():
    print(f"  {ms:8.2f} ms {100 * ms / total:5.1f}%  {kind}")


if __name__ == "__main__":
  app.run(main)
