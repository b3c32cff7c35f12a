#!/usr/bin/env bash
# Runs one cldis_jax command on every worker of a Cloud TPU VM (single host or pod).
#
# From your machine, with the repo copied to each worker (e.g. `gcloud compute
# tpus tpu-vm scp --recurse . $TPU:~/cldis_jax --worker=all --zone=$ZONE`):
#
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command \
#     "cd ~/cldis_jax && bash launch/run_tpu.sh --config configs/ffhq.py:128 \
#        --config.data.dir=gs://BUCKET/ffhq --workdir=gs://BUCKET/cldis/ffhq128"
#
# Every worker runs the same command; --distributed makes each call
# jax.distributed.initialize(), which finds the pod's coordinator by itself on
# TPU VMs. Put data and workdirs on gs:// so every worker sees the same files.
# Re-running the same command after a preemption resumes from the latest
# checkpoint in the workdir.
#
# Preflight: with PREFLIGHT=<topology> (e.g. PREFLIGHT=v5e:4x4, the slice you
# run on; docs/scaling.md lists the names) each worker first compiles the
# train step for that slice and refuses to start, in one line saying what to
# change, if it does not fit the chips' memory with 10% to spare:
#
#   ... --command "cd ~/cldis_jax && PREFLIGHT=v5e:4x4 bash launch/run_tpu.sh --config ..."
#
# The same check runs on any machine before you create the slice (it needs
# libtpu, not a TPU): pip install -e ".[tpu]", then
#   python -m cldis_jax.main --config configs/ffhq.py:128 --mode=compile \
#       --config.compile.topology=v5e:4x4 --config.compile.require_fit=True --workdir /tmp/pre
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d .venv ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "jax[tpu]" -e .
fi
if [ -n "${PREFLIGHT:-}" ]; then
  # The later --mode and --workdir win over the run's own: the check writes
  # its JSON to a local folder and trains nothing.
  .venv/bin/python -m cldis_jax.main "$@" --mode=compile --workdir="$(mktemp -d)" \
      --config.compile.topology="$PREFLIGHT" --config.compile.programs="('train',)" \
      --config.compile.require_fit=True
fi
exec .venv/bin/python -m cldis_jax.main --distributed "$@"
