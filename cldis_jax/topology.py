"""Compile-only devices of Cloud TPU topologies, and the chips' published specs.

With `libtpu` installed (`pip install -e ".[tpu]"`), JAX builds the devices of
a named TPU slice on any machine, CPU-only included: a program jitted over a
mesh of them compiles to the real TPU executable (its memory and cost
analyses are the TPU compiler's), though nothing can run on them.
`--mode=compile` (`compile_check.py`) uses this to tell whether a config fits
a slice before anyone pays for one.

Names are `<chip>:<shape>`: `v5e:2x2`, `v6e:4x4` (2-D slices of one-core
chips), `v4:2x2x1`, `v5p:2x2x2` (3-D slices; their two cores per chip run as
one JAX device, "megacore", as on a real v4 / v5p VM). `cpu` means this
machine's own devices (no memory limit, no roofline).
"""

import contextlib
import dataclasses
import importlib.util
import os
import re
import tempfile

import jax

from cldis_jax import errors

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One chip = one JAX device. Figures from Google's Cloud TPU pages."""
  name: str
  hbm_bytes: int
  peak_bf16_flops: float  # per second
  hbm_bytes_per_s: float


# Keyed by JAX's device_kind. Sources (each chip's "system architecture" table):
CHIPS = {
    # cloud.google.com/tpu/docs/v4: 275 TFLOPs (bf16), HBM2 32 GiB, 1200 GBps
    "TPU v4": Chip("v4", 32 * GiB, 275e12, 1200e9),
    # cloud.google.com/tpu/docs/v5e: 197 TFLOPs (bf16), HBM2 16 GB, 819 GBps
    "TPU v5 lite": Chip("v5e", 16 * GiB, 197e12, 819e9),
    # cloud.google.com/tpu/docs/v5p: 459 TFLOPs (bf16), HBM2e 95 GB, 2765 GBps
    "TPU v5": Chip("v5p", 95 * 10**9, 459e12, 2765e9),
    # cloud.google.com/tpu/docs/v6e: 918 TFLOPs (bf16), 32 GB, 1638 GBps
    "TPU v6 lite": Chip("v6e", 32 * GiB, 918e12, 1638e9),
}

# chip prefix -> (libtpu's name, dimensions of the shape, chip config)
_FAMILIES = {"v5e": ("v5e", 2, "default"), "v6e": ("v6e", 2, "default"),
             "v4": ("v4", 3, "megacore"), "v5p": ("v5", 3, "megacore")}
FORMS = "v5e:AxB, v6e:AxB, v4:AxBxC, v5p:AxBxC (e.g. v5e:2x2, v5e:4x4, v4:2x2x1, v5p:2x2x2) or cpu"


def parse(name: str) -> tuple[str, dict]:
  """'v5e:4x4' -> (libtpu's topology name, get_topology_desc keyword arguments)."""
  m = re.fullmatch(r"(v5e|v6e|v4|v5p):(\d+(?:x\d+)*)", name.strip())
  dims = tuple(int(d) for d in m.group(2).split("x")) if m else ()
  if not m or len(dims) != _FAMILIES[m.group(1)][1] or min(dims) < 1:
    raise errors.ConfigError(f"compile.topology {name!r} is not a topology; accepted: {FORMS}")
  libtpu_name, _, chip_config = _FAMILIES[m.group(1)]
  shape = "x".join(map(str, dims))
  kwargs = dict(chip_config_name=chip_config)
  if len(dims) == 2 and dims[0] * dims[1] < 4:  # a 1- or 2-chip host
    kwargs["chips_per_host_bounds"] = (dims[0], dims[1], 1)
  return f"{libtpu_name}:{shape}", kwargs


def libtpu_installed() -> bool:
  return importlib.util.find_spec("libtpu") is not None


@contextlib.contextmanager
def _stderr_to(path: str):
  """File descriptor 2 redirected to `path` (libtpu's C++ start-up warnings
  about the missing TPU VM metadata go there, not to the user's terminal)."""
  saved = os.dup(2)
  with open(path, "w") as f:
    os.dup2(f.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def devices(name: str) -> list:
  """The devices of topology `name` (compile-only TPU devices), or this
  machine's for 'cpu'. ConfigError for a name that is no topology, UsageError
  without libtpu."""
  if name == "cpu":
    return jax.devices("cpu")
  topology_name, kwargs = parse(name)
  if not libtpu_installed():
    raise errors.UsageError(f"compiling for {name} needs libtpu: pip install -e \".[tpu]\" "
                            "(or pip install \"jax[tpu]\")")
  if not _accelerators_present():
    # No TPU here to share: let several processes (tests, parallel compiles)
    # load libtpu, and skip its query for TPU VM metadata.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp, _stderr_to(os.path.join(tmp, "libtpu.log")):
    try:
      return list(topologies.get_topology_desc(topology_name=topology_name, platform="tpu",
                                               **kwargs).devices)
    except Exception as e:  # pylint: disable=broad-except
      if "topology" not in str(e).lower() and "invalid" not in str(e).lower():
        raise
      raise errors.ConfigError(f"compile.topology {name!r}: libtpu refused it "
                               f"({errors.one_line(e)[:300]}); accepted: {FORMS}") from e


def chip_of(device) -> Chip | None:
  """The chip's specs (None for a device not in CHIPS, e.g. a CPU)."""
  return CHIPS.get(device.device_kind)


def _accelerators_present() -> bool:
  """Whether this machine has a TPU chip or a GPU (JAX's own PCI / device
  file probe; True where that probe is unavailable)."""
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    return bool(hardware_utils.num_available_tpu_chips_and_device_id()[0]
                or hardware_utils.has_visible_nvidia_gpu()
                or hardware_utils.num_available_amd_gpus(stop_at=1) > 0)
  except (ImportError, AttributeError):
    return True


def hide_absent_accelerators() -> None:
  """Before JAX starts, on a machine with no TPU and no GPU: run on the CPU
  only. With libtpu installed, JAX would otherwise load it at start-up,
  look for TPU chips and print libtpu's warnings. Does nothing where
  JAX_PLATFORMS is set or an accelerator is present."""
  if os.environ.get("JAX_PLATFORMS") or not libtpu_installed() or _accelerators_present():
    return
  try:
    jax.config.update("jax_platforms", "cpu")
  except RuntimeError:  # JAX already started
    pass
