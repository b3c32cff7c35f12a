"""Data parallelism: the sharded step equals the single-device step, and two
processes on loopback train to the same parameters as one process."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cldis_jax import errors, parallel

from conftest import config_path, free_port, run_json_script, subprocess_env
from train_test import read_state

_FOUR_DEVICES = textwrap.dedent("""
    import json, sys, tempfile
    import jax, numpy as np
    from cldis_jax import config_lib, data, models, parallel, train, train_step
    config = config_lib.load_config(sys.argv[1])
    for item in sys.argv[2:]:  # overrides, KEY=JSON
      key, value = item.split("=", 1)
      config = config_lib.apply_overrides(config, config_lib.nested({key: json.loads(value)}))
    config.train.batch_size = 8
    # Biases in front of a GroupNorm get gradients that are zero up to rounding
    # (~1e-10), and Adam with eps 1e-8 turns those into updates of +-lr/2 whose
    # sign depends on summation order. A larger eps keeps the comparison about
    # the sharded gradient, not about amplified rounding noise.
    config.optim.eps = 1e-3
    nets = models.build_models(config.model)
    source = data.build_source(config.data, image_size=16, channels=3)
    plan = data.BatchPlan(len(source), 8, seed=0)
    out = {}
    for n in (1, 4):
      mesh = parallel.data_mesh(jax.devices()[:n])
      state = train_step.init_state_on_mesh(config, nets, jax.random.key(0), mesh)
      step = train_step.make_train_step(config, nets, mesh)
      pipe = data.InputPipeline(source, plan, sharding=parallel.batch_sharding(mesh))
      rng = jax.device_put(jax.random.key(1), parallel.replicated(mesh))
      for k in range(3):
        state, aux = step(state, {"image": pipe.global_batch(k)["image"]}, rng)
      out[n] = dict(leaves=jax.tree.leaves(jax.device_get((state.params, state.ema_params))),
                    aux=jax.device_get(aux), shards=len(state.params["head"]["proj"]["kernel"]
                                                        .sharding.device_set))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(out[1]["leaves"], out[4]["leaves"]))
    config.train.batch_size = 6
    try:
      train.train_and_evaluate(config, tempfile.mkdtemp())
      error = None
    except ValueError as e:
      error = str(e)
    print(json.dumps(dict(
        devices=jax.device_count(), max_param_diff=diff, shards=out[4]["shards"],
        grad_norm=[float(out[n]["aux"]["grad_norm"]) for n in (1, 4)],
        loss=[float(out[n]["aux"]["loss"]) for n in (1, 4)], error=error,
        terms=sorted(out[4]["aux"]),
        finite=all(bool(np.isfinite(v).all()) for n in (1, 4) for v in out[n]["aux"].values()))))
""")


def four_devices_against_one(*overrides: str) -> dict:
  """Three steps of configs/test.py (with KEY=JSON `overrides`) on 1 and on 4
  simulated devices: the largest parameter difference, the gradient norms
  and losses of both, the logged terms and whether all of them are finite,
  and the error for a batch that does not divide."""
  return run_json_script(_FOUR_DEVICES, config_path("test.py"), *overrides, devices=4)


@pytest.mark.slow
def test_four_devices_give_the_single_device_update():
  result = four_devices_against_one()
  assert result["devices"] == 4 and result["shards"] == 4 and result["finite"]
  assert result["max_param_diff"] < 1e-5, result
  # Adam hides a wrongly scaled gradient; the gradient norm does not.
  np.testing.assert_allclose(*result["grad_norm"], rtol=1e-4)
  np.testing.assert_allclose(*result["loss"], rtol=1e-5)
  assert "train.batch_size = 6 does not divide over the 4 devices" in result["error"]


_PROCESS = textwrap.dedent("""
    import sys
    import jax
    port, pid, workdir, config_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if pid >= 0:
      jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                                 process_id=pid,
                                 coordinator_bind_address=f"127.0.0.1:{port}")
    from cldis_jax import config_lib, train
    config = config_lib.load_config(config_file)
    config.train.update(batch_size=8, num_steps=4, log_every=2, checkpoint_every=0)
    config.samples.every = 0
    train.train_and_evaluate(config, workdir)
    if pid >= 0:
      jax.distributed.shutdown()
""")


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
  port = free_port()
  multi, single = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
  procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, str(port), str(pid), multi,
                             config_path("test.py")], env=subprocess_env(devices=1),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for pid in (0, 1)]
  ref = subprocess.run([sys.executable, "-c", _PROCESS, "0", "-1", single,
                        config_path("test.py")], env=subprocess_env(devices=2),
                       capture_output=True, text=True, timeout=400)
  assert ref.returncode == 0, ref.stderr[-3000:]
  for proc in procs:
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
  assert os.path.exists(os.path.join(multi, "metrics.json"))  # written by process 0
  step_a, a = read_state(multi)
  step_b, b = read_state(single)
  assert step_a == step_b == 4
  diff = max(float(np.abs(x - y).max()) for x, y in
             zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])))
  assert diff < 1e-6, diff


def test_cpu_device_count_is_one_per_core_or_the_largest_that_divides_the_batch():
  assert parallel.cpu_device_count(0, 16, cores=2) == 2
  assert parallel.cpu_device_count(0, 6, cores=4) == 3
  assert parallel.cpu_device_count(0, 7, cores=4) == 1
  assert parallel.cpu_device_count(3, 16, cores=2) == 3  # asked for: the mesh check says if it fits
  with pytest.raises(errors.UsageError, match="--cpu_devices = -1"):
    parallel.split_cpu(-1, 16)


@pytest.mark.slow
def test_default_cpu_split_trains_like_one_device(tmp_path):
  """`python -m cldis_jax.main` without XLA flags splits the CPU one device per
  core and says so; the update equals the --cpu_devices=1 run's."""
  env = dict(subprocess_env(), XLA_FLAGS="--xla_backend_optimization_level=0")
  runs = {}
  for name, extra in (("default", []), ("one", ["--cpu_devices=1"])):
    workdir = str(tmp_path / name)
    runs[name] = subprocess.Popen(
        [sys.executable, "-m", "cldis_jax.main", f"--config={config_path('test.py')}",
         f"--workdir={workdir}", "--config.train.num_steps=3", "--config.train.batch_size=4",
         "--config.optim.eps=1e-3", "--config.samples.every=0"] + extra,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  logs = {}
  for name, proc in runs.items():
    _, logs[name] = proc.communicate(timeout=400)
    assert proc.returncode == 0, logs[name][-3000:]
  split = parallel.cpu_device_count(0, 4, parallel.cpu_cores())
  if split > 1:
    assert f"the CPU split into {split} devices, each taking 1/{split}" in logs["default"]
  assert "devices: 1 x cpu (cpu): one device, convolutions on Eigen" in logs["one"]
  (step_a, a), (step_b, b) = read_state(str(tmp_path / "default")), read_state(str(tmp_path / "one"))
  assert step_a == step_b == 3
  diff = max(float(np.abs(x - y).max()) for x, y in
             zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])))
  assert diff < 1e-5, diff


_CONV_LIBRARY = """
import json, sys
import jax, jax.numpy as jnp
from cldis_jax import parallel
count = parallel.split_cpu(int(sys.argv[1]), 4)
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(jnp.ones((4, 8, 8, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print(json.dumps(dict(count=count, ynnpack="ynn_fusion" in hlo,
                      line=parallel.describe_devices(count))))
"""


@pytest.mark.parametrize("requested,xla_flags,count,ynnpack", [
    (1, "", 1, False),  # one device: Eigen's convolutions
    (2, "", 2, True),  # a split: XLA's default, YNNPACK
    (1, "--xla_cpu_experimental_ynn_fusion_type=individual_convolution", 1, True),  # the user's
])
def test_one_cpu_device_runs_convolutions_on_eigen(requested, xla_flags, count, ynnpack):
  out = run_json_script(_CONV_LIBRARY, str(requested), xla_flags=xla_flags)
  assert (out["count"], out["ynnpack"]) == (count, ynnpack)
  assert ("convolutions on Eigen" in out["line"]) == (not ynnpack)


def test_navigate_and_edit_get_one_cpu_device(tmp_path):
  """They run on one device, so by default the CPU is not split for them (the
  run itself stops at once here: the workdir holds no trained model)."""
  env = dict(subprocess_env(), XLA_FLAGS="--xla_backend_optimization_level=0")
  for mode in ("navigate", "edit"):
    proc = subprocess.run(
        [sys.executable, "-m", "cldis_jax.main", f"--config={config_path('test.py')}",
         f"--workdir={tmp_path}", f"--mode={mode}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert "devices: 1 x cpu (cpu): one device, convolutions on Eigen" in proc.stderr, (
        proc.stderr[-3000:])
