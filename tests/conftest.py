"""Shared fixtures. Compilation dominates at test sizes, so: the 'rbg' PRNG and
XLA's -O0 backend (each halves a cold compile of a jitted init here), a
persistent compilation cache, and models initialised once per session."""

import os
import pathlib
import socket

os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # libtpu, installed for --mode=compile, unloaded
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402

from cldis_jax import config_lib, models  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DIFFAE_KEYS = pathlib.Path(__file__).resolve().parent / "testdata" / "diffae_keys"

_cache = os.environ.get("CLDIS_TEST_JAX_CACHE",
                        os.path.expanduser("~/.cache/cldis_jax/test_compilation_cache"))
if _cache:
  jax.config.update("jax_compilation_cache_dir", _cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """Tests that share a built fixture run on one xdist worker (`--dist
  loadgroup`), so that it is built once, not once per worker: the tests of
  the session's trained workdir, and the tests of a module that use one of
  its module-scoped fixtures (a trained run, a probe, compiled programs)."""
  for item in items:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
      continue
    if "trained_workdir" in info.names_closure:
      group = "trained_workdir"
    elif any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
      group = item.module.__name__
    else:
      continue
    item.add_marker(pytest.mark.xdist_group(group))


def subprocess_env(devices: int = 1) -> dict[str, str]:
  """The environment for a test's child Python: `devices` simulated CPU devices,
  the same PRNG, -O0 and compilation cache as this process."""
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                       "--xla_backend_optimization_level=0")
  if _cache:
    env.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  return env


def run_json_script(script: str, *args: str, devices: int = 1,
                    xla_flags: str | None = None) -> dict:
  """Runs `python -c script args` on `devices` simulated CPU devices (or, with
  `xla_flags`, with XLA_FLAGS set to exactly that); the JSON object its last
  output line holds."""
  import json, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  env = subprocess_env(devices)
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  proc = subprocess.run([sys.executable, "-c", script, *args], env=env,
                        capture_output=True, text=True, timeout=400)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now (for jax.distributed)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def config_path(name: str) -> str:
  return str(REPO / "configs" / name)


@pytest.fixture(scope="session")
def test_config():
  return config_lib.load_config(config_path("test.py"))


@pytest.fixture(scope="session")
def tiny_models(test_config):
  return models.build_models(test_config.model)


@pytest.fixture(scope="session")
def tiny_params(tiny_models):
  """Freshly initialised parameters of configs/test.py."""
  return models.init_params(tiny_models, jax.random.key(0))


@pytest.fixture(scope="session")
def random_diffae_params(tiny_params):
  """DiffAE parameters with every leaf randomised (no zero-initialised layer left)."""
  leaves, treedef = jax.tree.flatten(tiny_params["diffae"])
  keys = jax.random.split(jax.random.key(1), len(leaves))
  noisy = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, noisy)


@pytest.fixture(scope="session")
def latent_workdir(trained_workdir, tmp_path_factory, test_config):
  """(a copy of the trained run with its latent DDIM trained for 6 steps,
  checkpoints at 3 and 6; train_latent's metrics)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from cldis_jax import train_latent  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("latent") / "run")
  shutil.copytree(trained_workdir, workdir)
  return workdir, train_latent.run(test_config, workdir)


def read_official_keys(resolution: int) -> dict[str, tuple[int, ...]]:
  """The official ffhq{resolution} state-dict keys and shapes (derived data)."""
  keys = {}
  for line in (DIFFAE_KEYS / f"keys_ffhq{resolution}.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, shape = line.split(" ", 1)
      keys[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
  return keys


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, test_config):
  """A configs/test.py run trained for 4 steps (no grids, no evaluation): the
  checkpoint navigation, editing and the API load."""
  from cldis_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("trained"))
  config = test_config.copy_and_resolve_references()
  config.train.update(num_steps=4, checkpoint_every=4, log_every=4)
  config.samples.every = 0
  train.train_and_evaluate(config, workdir)
  return workdir
