"""`--mode=compile`: the run's programs compiled for Cloud TPU topologies on
this CPU (libtpu's compile-only devices), their memory per chip, FLOPs and
roofline bound; a batch that cannot fit is a result; the launch preflight."""

import json
import os
import subprocess
import sys

import jax
import pytest

from cldis_jax import compile_check, compile_report, config_lib, errors, topology
from conftest import REPO, config_path, run_json_script, subprocess_env

needs_libtpu = pytest.mark.skipif(not topology.libtpu_installed(),
                                  reason='needs libtpu: pip install -e ".[tpu]"')


def _main(*args, env=None):
  return subprocess.run([sys.executable, "-m", "cldis_jax.main", "--config",
                         config_path("test.py"), *args], capture_output=True, text=True,
                        cwd=REPO, env=env or subprocess_env(), check=False, timeout=900)


@pytest.mark.parametrize("name,expected", [
    ("v5e:2x2", ("v5e:2x2", dict(chip_config_name="default"))),
    ("v5e:1x1", ("v5e:1x1", dict(chip_config_name="default", chips_per_host_bounds=(1, 1, 1)))),
    ("v4:2x2x2", ("v4:2x2x2", dict(chip_config_name="megacore"))),
    ("v5p:2x2x1", ("v5:2x2x1", dict(chip_config_name="megacore"))),
])
def test_topology_names_map_to_libtpu(name, expected):
  assert topology.parse(name) == expected


@pytest.mark.parametrize("name", ["v5e", "v5e:2x2x1", "v4:2x2", "tpu:2x2", "v5e:0x2", "gpu"])
def test_unknown_topology_lists_the_accepted_forms(name):
  with pytest.raises(errors.ConfigError, match="accepted: v5e:AxB, v6e:AxB, v4:AxBxC"):
    topology.parse(name)


def test_without_libtpu_one_line_says_how_to_install(monkeypatch):
  monkeypatch.setattr(topology, "libtpu_installed", lambda: False)
  with pytest.raises(errors.UsageError, match=r'pip install -e "\.\[tpu\]"'):
    topology.devices("v5e:2x2")


@pytest.mark.parametrize("message,required,available", [
    ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
     "temporaries (3.92T) exceeds available HBM (15.75G).", 3.92 * 2**40, 15.75 * 2**30),
    ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space "
     "hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.", 20.5 * 2**30,
     15.75 * 2**30),
])
def test_out_of_memory_messages_give_the_excess(message, required, available):
  oom = compile_check.out_of_memory(RuntimeError(message))
  assert oom["required_bytes"] == pytest.approx(required)
  assert oom["available_bytes"] == pytest.approx(available)
  assert oom["excess_bytes"] == pytest.approx(required - available)
  assert compile_check.out_of_memory(RuntimeError("INVALID_ARGUMENT: bad shape")) is None


def test_plain_cpu_runs_do_not_start_libtpu():
  """With libtpu installed and no TPU, an ordinary run stays on the CPU:
  libtpu's start-up warnings never reach the user."""
  env = subprocess_env()
  del env["JAX_PLATFORMS"]
  result = _main("--mode=summary", env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "TPU" not in result.stderr, result.stderr[-2000:]


@pytest.fixture(scope="module")
def v5e_2x2(tmp_path_factory):
  """Every program of the test config (batch 8: the TPU compiler's time grows
  with the images per chip) compiled for v5e:2x2 by the CLI."""
  workdir = tmp_path_factory.mktemp("compile")
  result = _main("--mode=compile", f"--workdir={workdir}", "--config.compile.topology=v5e:2x2",
                 "--config.train.batch_size=8")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(compile_check.json_path(str(workdir), "v5e:2x2")) as f:
    return json.load(f), result


@needs_libtpu
@pytest.mark.slow
def test_every_program_compiles_for_v5e_with_every_figure(v5e_2x2):
  record, result = v5e_2x2
  assert (record["devices"], record["processes"], record["device_kind"]) == (4, 1, "TPU v5 lite")
  assert set(record["programs"]) == {"train", "navigate", "encode", "invert", "decode",
                                     "traverse"}
  for name, p in record["programs"].items():
    assert set(p["bytes"]) == {"argument", "output", "temp", "alias", "code", "total"}, name
    assert p["bytes"]["total"] > 0 and p["flops"] > 0 and p["bytes_accessed"] > 0, name
    assert p["fits"] is True and 0 < p["headroom"] < 1, name
    assert p["roofline_s"] > 0 and p["bound"] in ("compute", "memory"), name
    assert p["compile_s"] > 0 and p["hbm_bytes"] == 16 * 2**30, name
  train = record["programs"]["train"]
  assert (train["devices"], train["batch"], train["per_device_batch"]) == (4, 8, 2)
  assert train["bytes"]["alias"] > 0  # the donated state
  assert train["days_at_bound"] == pytest.approx(
      train["num_steps"] * train["roofline_s"] / 86400)
  assert record["programs"]["encode"]["devices"] == 4
  assert record["programs"]["navigate"]["devices"] == 1
  # the printed table, and none of libtpu's start-up noise
  assert "v5e:2x2: 4 x TPU v5 lite on 1 host process(es)" in result.stdout
  assert "train: " in result.stdout and "at the roofline bound" in result.stdout
  assert "TPU_WORKER_HOSTNAMES" not in result.stderr


@needs_libtpu
@pytest.mark.slow
def test_multi_host_topology_splits_the_batch_not_the_state(v5e_2x2, test_config):
  """v5e:4x4 spans 4 host processes: at twice v5e:2x2's batch (16 over 16
  chips against 8 over 4) each device holds half its images and the same
  replicated state."""
  small = v5e_2x2[0]["programs"]["train"]
  config = test_config.copy_and_resolve_references()
  config.train.batch_size = 16
  config.compile.programs = ("train",)
  from cldis_jax import models  # pylint: disable=g-import-not-at-top
  big = compile_check.check_topology(config, models.build_models(config.model), "v5e:4x4",
                                     topology.devices("v5e:4x4"))
  assert (big["devices"], big["processes"]) == (16, 4)
  big = big["programs"]["train"]
  assert big["per_device_batch"] == 1 and small["per_device_batch"] == 2
  assert big["argument_bytes"]["state"] == small["argument_bytes"]["state"]
  assert small["argument_bytes"]["batch"] == 2 * big["argument_bytes"]["batch"]
  assert small["bytes"]["argument"] > big["bytes"]["argument"]
  assert big["flops"] < small["flops"]


@needs_libtpu
def test_a_batch_far_too_large_does_not_fit_and_says_by_how_much(tmp_path):
  """An out-of-memory compile is a result: exit 0, the excess in the table and JSON."""
  result = _main("--mode=compile", f"--workdir={tmp_path}", "--config.compile.topology=v5e:2x2",
                 "--config.compile.programs=('encode',)",
                 f"--config.evaluate.encode_batch={2**26}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "does not fit: asks for" in result.stdout
  with open(compile_check.json_path(str(tmp_path), "v5e:2x2")) as f:
    encode = json.load(f)["programs"]["encode"]
  assert encode["fits"] is False and encode["out_of_memory"]["excess_bytes"] > 2**30


@needs_libtpu
@pytest.mark.slow
def test_launch_preflight_refuses_a_train_step_that_does_not_fit(tmp_path):
  """launch/run_tpu.sh with PREFLIGHT: one line saying what to change, exit 2,
  and the run itself never starts."""
  (tmp_path / "launch").mkdir()
  script = tmp_path / "launch" / "run_tpu.sh"
  script.write_text((REPO / "launch" / "run_tpu.sh").read_text())
  (tmp_path / ".venv" / "bin").mkdir(parents=True)
  os.symlink(sys.executable, tmp_path / ".venv" / "bin" / "python")
  env = dict(subprocess_env(), PREFLIGHT="v5e:2x2")
  result = subprocess.run(["bash", str(script), "--config", config_path("test.py"),
                           f"--config.train.batch_size={2**25}", f"--workdir={tmp_path / 'w'}"],
                          capture_output=True, text=True, env=env, check=False, timeout=900)
  assert result.returncode == errors.EXIT_CODE, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: the train step does not fit v5e:2x2: it needs "), last
  assert "lower train.batch_size or pick a larger topology" in last
  assert not (tmp_path / "w").exists()


_SAME_STEP = """
import json, sys, jax
from cldis_jax import config_lib, models, programs, topology
config = config_lib.load_config(sys.argv[1])
config.train.batch_size = 8
m = models.build_models(config.model)
def signature(lowered):  # the mesh, and main's arguments: shapes, shardings, aliasing
  lines = lowered.as_text().splitlines()
  return [l.strip() for l in lines if "sdy.mesh @" in l or "func.func public @main" in l]
cpu = programs.build("train", config, m, jax.devices()).lower()
cpu.compile()
tpu = programs.build("train", config, m, topology.devices("v5e:2x2")).lower()
print(json.dumps(dict(cpu=signature(cpu), tpu=signature(tpu))))
"""


@needs_libtpu
@pytest.mark.slow
def test_the_tpu_program_is_the_training_step_with_its_shardings():
  """One call builds the step for a 4-device CPU mesh (compiled and run-able
  here) and for v5e:2x2: the same arguments, shapes, shardings and donation."""
  out = run_json_script(_SAME_STEP, config_path("test.py"), devices=4)
  assert out["cpu"] == out["tpu"]
  mesh, main = out["cpu"]
  assert 'sdy.mesh @mesh = <["data"=4]>' in mesh
  assert 'tensor<8x16x16x3xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}, {}, {}]>}' in main
  assert "tf.aliasing_output" in main  # the state is donated


def test_max_batch_search_doubles_then_bisects(monkeypatch, test_config, tiny_models):
  """The search finds the largest fitting per-device batch with few compiles."""
  compiled = []

  def fake_measure(program, chip, headroom):
    per_device = program.batch // program.devices
    compiled.append(per_device)
    return dict(fits=per_device <= 37, compile_s=0.0)

  monkeypatch.setattr(compile_check, "measure", fake_measure)
  devices = [jax.devices()[0]]
  result = compile_check.max_batch(test_config, tiny_models, devices, None, 0.1)
  assert (result["per_device_batch"], result["global_batch"]) == (37, 37)
  assert compiled == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
  assert not result["capped"]


def test_cpu_slice_compiles_and_reports_without_a_chip(tmp_path, test_config):
  """`cpu` compiles on this machine's devices: figures, no HBM verdict."""
  config = test_config.copy_and_resolve_references()
  config.compile.update(topology="cpu", programs=("encode", "decode"))
  (result,) = compile_check.run(config, str(tmp_path))
  with open(compile_check.json_path(str(tmp_path), "cpu")) as f:
    assert json.load(f)["programs"].keys() == {"encode", "decode"}
  assert result["chip"] is None
  for record in result["programs"].values():
    assert record["fits"] is None and record["flops"] > 0 and record["bytes"]["total"] > 0
  table = compile_report.format_table(result)
  assert "cpu: 1 x cpu on 1 host process(es)" in table and "decode" in table


@pytest.mark.parametrize("capability", ["none", "labels", "subspaces"])
def test_the_train_programs_batch_is_what_the_training_pipeline_yields(capability):
  from cldis_jax import data, models, parallel, programs, train  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(config_path("test.py"))
  if capability == "labels":
    config.model.labels.update(factors=("floor_hue", "object_hue"), sizes=(10, 10))
    config.supervision.num_labelled = 64
  elif capability == "subspaces":
    config.subspaces.update(blocks=("floor", "wall", "object"), sizes=(4, 4, 4))
  mesh = parallel.data_mesh(jax.devices()[:1])
  batch = next(train._batches(config, data.source_of(config), mesh)(0))  # pylint: disable=protected-access
  declared = programs.train(config, models.build_models(config.model),
                            jax.devices()[:1]).arguments["batch"]
  shape = lambda tree: {k: (tuple(v.shape), str(v.dtype)) for k, v in tree.items()}
  assert shape(declared) == shape(batch)
  assert len(declared) == {"none": 1, "labels": 4, "subspaces": 2}[capability]
