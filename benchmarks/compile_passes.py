"""Where an XLA compile spends its time: the passes of a `--mode=compile`
run with `--config.compile.dump_to=DIR`, summed from XLA's module metadata.

  python -m cldis_jax.main --config configs/ffhq.py:64 --mode=compile --workdir /tmp/w \\
      --config.compile.topology=v5e:2x2 --config.train.batch_size=8 \\
      --config.compile.programs="('train',)" --config.compile.dump_to=/tmp/dump
  python benchmarks/compile_passes.py /tmp/dump/v5e_2x2/train [--top 15]

XLA records each HLO pass's start and end; the compile's wall time (in the
JSON) minus their span is the backend's code generation after the last pass.
"""

import argparse
import collections
import glob
import os
import re


def passes(path: str):
  """(pass name, pipeline name, seconds, start us, end us) of every pass."""
  text = open(path).read()
  for block in re.findall(r"pass_metadata \{(.*?)\n\}", text, re.S):
    field = lambda k: re.search(rf'{k}: "?([^"\n]*)"?', block).group(1)
    start, end = int(field("start_timestamp_usec")), int(field("end_timestamp_usec"))
    yield field("pass_name"), field("pipeline_name"), (end - start) / 1e6, start, end


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("dump_dir")
  parser.add_argument("--top", type=int, default=15)
  args = parser.parse_args()
  files = glob.glob(os.path.join(args.dump_dir, "*.metadata.textproto"))
  if not files:
    raise SystemExit(f"no *.metadata.textproto in {args.dump_dir}")
  rows = [r for f in files for r in passes(f)]
  by_pass, by_pipeline = collections.Counter(), collections.Counter()
  for name, pipeline, seconds, _, _ in rows:
    by_pass[name] += seconds
    by_pipeline[pipeline] += seconds
  span = (max(r[4] for r in rows) - min(r[3] for r in rows)) / 1e6
  print(f"{len(rows)} passes, {sum(by_pass.values()):.1f} s in all, spanning {span:.1f} s")
  for title, counter in (("pass", by_pass), ("pipeline", by_pipeline)):
    print(f"\n{'seconds':>8}  {title}")
    for name, seconds in counter.most_common(args.top):
      print(f"{seconds:8.2f}  {name}")


if __name__ == "__main__":
  main()
