"""The input pipeline: batches are a pure function of (seed, step), processes
read disjoint rows that together cover each epoch, resuming reproduces the
uninterrupted stream, and the global array equals the unsharded batch."""

import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cldis_jax import data, parallel
from cldis_jax.data import BatchPlan, InputPipeline, ProceduralDSprites, ProceduralShapes3D

from conftest import config_path, free_port, subprocess_env


@pytest.fixture(scope="module")
def source():
  return ProceduralShapes3D(16)


def _pipeline(source, batch=8, seed=0, hflip=False, **kwargs):
  return InputPipeline(source, BatchPlan(len(source), batch, seed=seed, hflip=hflip),
                       **kwargs)


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_batches_other_seed_other_batches(source):
  first = list(_pipeline(source, seed=3).iterate(0, 4))
  second = list(_pipeline(source, seed=3).iterate(0, 4))
  other = list(_pipeline(source, seed=4).iterate(0, 4))
  assert all(_same(a, b) for a, b in zip(first, second))
  assert not any(np.array_equal(a["index"], b["index"]) for a, b in zip(first, other))


def test_resuming_at_a_step_continues_the_uninterrupted_stream(source):
  pipeline = _pipeline(source, hflip=True)
  uninterrupted = list(pipeline.iterate(0, 7))
  resumed = list(_pipeline(source, hflip=True).iterate(4, 7))
  assert all(_same(a, b) for a, b in zip(uninterrupted[4:], resumed))


def test_batches_hold_model_range_images_and_their_labels(source):
  batch = _pipeline(source).local_batch(0)
  assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  raw = source.__getitems__(batch["index"])
  np.testing.assert_allclose(batch["image"], raw["image"] / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_array_equal(batch["factors"], raw["factors"])


def test_epochs_are_permutations_and_the_remainder_is_dropped():
  source = ProceduralDSprites(8)
  plan = BatchPlan(len(source), 100_000, seed=0)
  assert plan.steps_per_epoch == 7  # 737,280 // 100,000: the last 37,280 are dropped
  for epoch in (0, 1):
    seen = np.concatenate([plan.indices(epoch * 7 + k) for k in range(7)])
    assert len(np.unique(seen)) == len(seen) == 700_000
  assert not np.array_equal(plan.indices(0), plan.indices(7))


def test_two_hosts_read_disjoint_rows_that_cover_the_epoch():
  source = ProceduralShapes3D(8)
  small = BatchPlan(len(source), 12, seed=5)
  hosts = [InputPipeline(source, small, process_index=p, process_count=2) for p in (0, 1)]
  everyone = InputPipeline(source, small, process_index=0, process_count=1)
  for step in (0, 1, 39_999, 40_000):
    parts = [h.local_batch(step)["index"] for h in hosts]
    assert not set(parts[0]) & set(parts[1])
    np.testing.assert_array_equal(np.concatenate(parts), everyone.local_batch(step)["index"])
  covered = np.concatenate([small.indices(s) for s in range(small.steps_per_epoch)])
  np.testing.assert_array_equal(np.sort(covered), np.arange(len(source)))


def test_flips_mirror_exactly_the_chosen_rows(source):
  flipped = _pipeline(source, hflip=True).local_batch(2)
  plain = _pipeline(source, hflip=False).local_batch(2)
  rows = _pipeline(source, hflip=True).plan.flips(2)
  assert 0 < rows.sum() < len(rows)
  np.testing.assert_array_equal(flipped["image"][rows], plain["image"][rows][:, :, ::-1])
  np.testing.assert_array_equal(flipped["image"][~rows], plain["image"][~rows])


def test_a_failing_reader_raises_in_the_consumer(source):
  class Broken(ProceduralShapes3D):
    def render(self, factors):
      raise RuntimeError("disk on fire")
  pipeline = _pipeline(Broken(16))
  with pytest.raises(RuntimeError, match="disk on fire"):
    next(pipeline.iterate())


def test_build_pipeline_from_config_gives_a_global_sharded_batch(test_config):
  source = data.build_source(test_config.data, image_size=16, channels=3)
  pipeline = data.build_pipeline(test_config, source)
  batch = pipeline.global_batch(0)
  assert isinstance(batch["image"], jax.Array)
  assert batch["image"].shape == (test_config.train.batch_size, 16, 16, 3)
  assert batch["image"].sharding.is_equivalent_to(
      parallel.batch_sharding(parallel.data_mesh()), 4)
  with pytest.raises(ValueError, match="does not divide"):
    parallel.check_batch_divides(3, jax.sharding.Mesh(np.array(jax.devices() * 2), ("data",)))


_SHARDED = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from cldis_jax import config_lib, data, parallel
    config = config_lib.load_config(sys.argv[1])
    config.train.batch_size = 8
    source = data.build_source(config.data, image_size=16, channels=3)
    pipeline = data.build_pipeline(config, source)
    unsharded = data.InputPipeline(source, pipeline.plan, process_index=0, process_count=1)
    batch = pipeline.global_batch(5)
    reference = unsharded.local_batch(5)
    shards = sorted((s.index[0].start or 0) for s in batch["image"].addressable_shards)
    print(json.dumps(dict(
        devices=jax.device_count(), shards=shards,
        equal=all(np.array_equal(np.asarray(batch[k]), reference[k]) for k in reference))))
""")


def test_four_device_global_batch_equals_the_unsharded_batch():
  env = subprocess_env(devices=4)
  out = subprocess.run([sys.executable, "-c", _SHARDED, config_path("test.py")], env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == dict(devices=4, shards=[0, 2, 4, 6], equal=True)


_PROCESS = textwrap.dedent("""
    import json, sys
    import jax
    port, pid = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                               process_id=pid, coordinator_bind_address=f"127.0.0.1:{port}")
    import numpy as np
    from jax.experimental import multihost_utils
    from cldis_jax import config_lib, data
    config = config_lib.load_config(sys.argv[3])
    config.train.batch_size = 8
    source = data.build_source(config.data, image_size=16, channels=3)
    pipeline = data.build_pipeline(config, source)
    steps = []
    for step, batch in zip(range(3, 6), pipeline.iterate(3)):
      local = [np.asarray(s.data) for s in batch["index"].addressable_shards]
      gathered = multihost_utils.process_allgather(batch["index"], tiled=True)
      steps.append(dict(local=np.concatenate(local).tolist(),
                        gathered=np.asarray(gathered).tolist(),
                        plan=pipeline.plan.indices(step).tolist()))
    print(json.dumps(dict(pid=pid, devices=jax.device_count(), steps=steps)))
    jax.distributed.shutdown()
""")


def test_two_processes_read_disjoint_shards_of_the_same_global_batch():
  port = free_port()
  env = subprocess_env(devices=2)
  procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, str(port), str(pid),
                             config_path("test.py")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  assert [r["devices"] for r in results] == [4, 4]
  for first, second in zip(results[0]["steps"], results[1]["steps"]):
    assert not set(first["local"]) & set(second["local"])
    assert first["local"] + second["local"] == first["plan"] == second["plan"]
    assert first["gathered"] == first["plan"]
