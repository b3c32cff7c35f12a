"""docs/scaling.md's table, from the JSON of `--mode=compile` that
benchmarks/scaling_compile.sh keeps under docs/results/scaling/.

  python benchmarks/scaling_table.py [docs/results/scaling]

One row per config and slice: the train step's memory per chip against the
chip's HBM, FLOPs per image, the roofline bound on a step and the days the
config's official sample count takes at that bound. Compile-time figures and
bounds, not measured speeds.
"""

import glob
import json
import os
import sys

from cldis_jax.compile_report import duration

ORDER = ("quickstart", "shapes3d", "celeba64", "ffhq64", "ffhq128", "ffhq256")
CHIPS = ("v5e", "v6e", "v4", "v5p")


def rows(root: str):
  for path in glob.glob(os.path.join(root, "*", "compile", "*.json")):
    name = path.split(os.sep)[-3]
    with open(path) as f:
      record = json.load(f)
    train = record["programs"].get("train")
    if train is not None:
      yield name, record, train


def _key(row):
  name, record, _ = row
  chip = record["chip"]["name"] if record["chip"] else ""
  return (ORDER.index(name) if name in ORDER else len(ORDER), name,
          CHIPS.index(chip) if chip in CHIPS else len(CHIPS), record["devices"])


def format_row(name: str, record: dict, train: dict) -> str:
  gib = lambda x: f"{x / 2**30:.2f}"
  chips = f"{record['devices']} ({record['processes']})"
  batch = f"{record['config']['batch_size']} / {train['per_device_batch']:g}"
  if "bytes" not in train:  # out of memory
    need = train["out_of_memory"].get("required_bytes")
    return (f"| {name} | {record['topology']} | {chips} | {batch} | needs {gib(need) if need else '?'}"
            f" of {gib(train['hbm_bytes'])} | does not fit | | | | {train['compile_s']:.0f} |")
  samples = record["config"]["batch_size"] * record["config"]["num_steps"]
  return (f"| {name} | {record['topology']} | {chips} | {batch} | {gib(train['bytes']['total'])} "
          f"of {gib(train['hbm_bytes'])} | {100 * train['headroom']:.0f}% "
          f"| {train['flops_per_image'] / 1e9:.2f} | {1e3 * train['roofline_s']:.1f} "
          f"({train['bound']}) | {duration(86400 * train['days_at_bound'])} ({samples / 1e6:g}M) "
          f"| {train['compile_s']:.0f} |")


def table(root: str) -> str:
  head = ("| config | slice | chips (hosts) | batch: global / per chip | GiB per chip | headroom "
          "| GFLOP per image | bound ms per step | time at the bound (samples) | compile s |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
  return "\n".join([head] + [format_row(*row) for row in sorted(rows(root), key=_key)])


if __name__ == "__main__":
  print(table(sys.argv[1] if len(sys.argv) > 1 else "docs/results/scaling"))
