#!/usr/bin/env bash
# Compiles each shipped config's train step for Cloud TPU slices on this
# machine (no TPU; needs `pip install -e ".[tpu]"`) and keeps the JSON under
# docs/results/scaling/<config>/compile/<topology>.json, the source of
# docs/scaling.md's table (`python benchmarks/scaling_table.py`).
#
#   bash benchmarks/scaling_compile.sh            # every row not yet compiled
#   bash benchmarks/scaling_compile.sh & bash benchmarks/scaling_compile.sh   # two at once
#
# Rows already compiled are skipped, so an interrupted run picks up where it
# stopped, and a row another copy of this script is compiling (it holds the
# row's lock under $TMPDIR) is skipped too. Each row is one `--mode=compile`
# command, printed before it runs. Each takes 10-40 minutes and 5-12 GiB of
# memory on a 2-core machine: two copies at once need about 24 GiB.
set -uo pipefail
cd "$(dirname "$0")/.."
locks=${TMPDIR:-/tmp}/cldis_scaling_locks
mkdir -p "$locks"

# config spec | name | topology (the official global batch, per-device batch in the comment)
rows=(
  "configs/quickstart.py|quickstart|v5e:1x1"    # 16 per chip
  "configs/quickstart.py|quickstart|v6e:1x1"    # 16
  "configs/quickstart.py|quickstart|v4:2x2x1"   # 4
  "configs/quickstart.py|quickstart|v5p:2x2x1"  # 4
  "configs/ffhq.py:64|ffhq64|v5e:4x4"           # 128 / 16 = 8
  "configs/ffhq.py:256|ffhq256|v5e:8x8"         # 64 / 64 = 1
  "configs/shapes3d.py|shapes3d|v5e:4x4"        # 64 / 16 = 4
  "configs/ffhq.py:128|ffhq128|v5e:8x8"         # 128 / 64 = 2
  "configs/celeba64.py|celeba64|v5e:4x4"        # 4
  "configs/ffhq.py:64|ffhq64|v6e:4x4"           # 8
  "configs/ffhq.py:64|ffhq64|v4:2x2x4"          # 8
  "configs/ffhq.py:64|ffhq64|v5p:2x2x4"         # 8
  "configs/ffhq.py:128|ffhq128|v6e:8x8"
  "configs/ffhq.py:256|ffhq256|v6e:8x8"
  "configs/shapes3d.py|shapes3d|v4:2x2x4"
  "configs/shapes3d.py|shapes3d|v5p:2x2x4"
  "configs/shapes3d.py|shapes3d|v6e:4x4"
  "configs/celeba64.py|celeba64|v4:2x2x4"
  "configs/celeba64.py|celeba64|v5p:2x2x4"
  "configs/celeba64.py|celeba64|v6e:4x4"
  "configs/ffhq.py:128|ffhq128|v4:4x4x4"
  "configs/ffhq.py:256|ffhq256|v4:4x4x4"
  "configs/ffhq.py:128|ffhq128|v5p:4x4x4"
  "configs/ffhq.py:256|ffhq256|v5p:4x4x4"
)

for row in "${rows[@]}"; do
  IFS='|' read -r spec name topo <<< "$row"
  workdir="docs/results/scaling/$name"
  [ -f "$workdir/compile/${topo/:/_}.json" ] && continue
  exec 9>"$locks/${name}_${topo/:/_}.lock"
  flock -n 9 || continue   # another copy is compiling this row
  [ -f "$workdir/compile/${topo/:/_}.json" ] && continue   # it finished meanwhile
  cmd=(python -m cldis_jax.main --config "$spec" --mode=compile --workdir "$workdir"
       --config.compile.topology="$topo" --config.compile.programs="('train',)")
  echo "+ ${cmd[*]}"
  "${cmd[@]}" 2>&1 9>&- | grep -v "^I[0-9]"
  exec 9>&-
done
