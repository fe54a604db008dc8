#!/usr/bin/env bash
# Runs an experiment script on every worker of an existing TPU VM.
# Minimal form; the scale-out issue extends it (create/delete VMs, logs).
#
#   TPU_NAME=my-tpu ZONE=us-central2-b ./launch_tpu.sh [--dry-run] \
#       experiments.train --config=configs/default.py:tiny --workdir=gs://bucket/run
set -euo pipefail

dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
  dry_run=1
  shift
fi
if [[ $# -lt 1 ]]; then
  echo "usage: TPU_NAME=... ZONE=... $0 [--dry-run] MODULE [ARGS...]" >&2
  exit 2
fi
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE}"

module=$1
shift
printf -v args ' %q' "$@"
remote="cd ~/hybrid_rl && python3 -m ${module}${args}"
cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$remote")

if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
else
  "${cmd[@]}"
fi
