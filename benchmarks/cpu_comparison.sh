#!/usr/bin/env bash
# The CPU comparison of docs/benchmarks.md: the quickstart step, the 32 px
# Diff-AE step and ffhq64 (step and DDIM) on 1 and 2 host devices, for this
# checkout and, if given, an older one ("before"), one run after the other.
#
#   benchmarks/cpu_comparison.sh                     # this checkout only
#   git worktree add /tmp/before 0ee9fe5 && benchmarks/cpu_comparison.sh /tmp/before
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
before="${1:-}"

run() {  # label checkout devices args...
  local label=$1 dir=$2 devices=$3
  shift 3
  echo "== $label, $devices device(s)"
  if [[ "$dir" == "$here" ]]; then  # this version chooses its own XLA:CPU settings per count
    (cd "$dir" && PYTHONPATH="$dir" python benchmarks/step_benchmark.py --cpu_devices="$devices" "$@" \
       2>&1 | grep -E "^(cldis|diffae|ddim20) |official")
  else  # an older checkout, which may lack --cpu_devices
    (cd "$dir" && PYTHONPATH="$dir" XLA_FLAGS="--xla_force_host_platform_device_count=$devices" \
       python benchmarks/step_benchmark.py "$@" 2>&1 | grep -E "^(cldis|diffae|ddim20) |official")
  fi
}

quickstart=(--config configs/quickstart.py --parts cldis,diffae --repeats 10)
small=(--config configs/ffhq.py:64 --config.model.image_size=32 --config.model.diffae.base_channels=32
       "--config.model.diffae.channel_mult=(1,2,4)" "--config.model.diffae.enc_channel_mult=(1,2,4,4)"
       "--config.model.diffae.attn_resolutions=(16,)" --config.model.dtype=float32 --batch 32
       --parts diffae --repeats 5)
ffhq64=(--config configs/ffhq.py:64 --batch 8 --config.model.dtype=float32 --parts diffae,sample
        --repeats 3)

for set in quickstart small ffhq64; do
  declare -n args=$set
  for devices in 1 2; do
    if [[ -n "$before" ]]; then run "before: $set" "$before" $devices "${args[@]}"; fi
    run "now: $set" "$here" $devices "${args[@]}"
  done
done
