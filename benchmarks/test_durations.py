"""The slowest tests of a suite run and their share, from pytest's report.

  python -m pytest -n auto --durations=0 | tee /tmp/suite.log
  python benchmarks/test_durations.py /tmp/suite.log [--top 25] [--json out.json]

Prints a markdown table of the slowest phases (setup = a fixture built for
that test, call = the test itself), the total per module, and the sum of all
phases (CPU-side seconds over both workers, not wall time).
"""

import argparse
import collections
import json
import re

_ROW = re.compile(r"^([0-9.]+)s (setup|call|teardown)\s+(\S.*)$")


def read(path: str) -> list[tuple[float, str, str]]:
  """(seconds, phase, test id without its xdist group) for each reported phase."""
  rows = []
  with open(path) as f:
    for line in f:
      m = _ROW.match(line.rstrip())
      if m:
        rows.append((float(m.group(1)), m.group(2), re.sub(r"@\w+$", "", m.group(3))))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("log")
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  rows = read(args.log)
  total = sum(r[0] for r in rows)
  modules = collections.Counter()
  for seconds, _, test in rows:
    modules[test.split("::")[0]] += seconds
  print(f"{len(rows)} phases, {total:.0f} s in all\n")
  print("| s | share | phase | test |\n|---:|---:|---|---|")
  for seconds, phase, test in sorted(rows, reverse=True)[:args.top]:
    print(f"| {seconds:.0f} | {100 * seconds / total:.1f}% | {phase} | `{test.removeprefix('tests/')}` |")
  print("\n| s | share | module |\n|---:|---:|---|")
  for module, seconds in modules.most_common():
    if seconds >= 1:
      print(f"| {seconds:.0f} | {100 * seconds / total:.1f}% | `{module.removeprefix('tests/')}` |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(total_s=total, modules=dict(modules.most_common()),
                     slowest=[dict(s=s, phase=p, test=t)
                              for s, p, t in sorted(rows, reverse=True)[:args.top]]), f, indent=1)


if __name__ == "__main__":
  main()
