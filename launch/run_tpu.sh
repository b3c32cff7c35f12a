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
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d .venv ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "jax[tpu]" -e .
fi
exec .venv/bin/python -m cldis_jax.main --distributed "$@"
