#!/usr/bin/env bash
# Launches a hybrid_rl experiment on every worker of a Cloud TPU VM (one JAX
# process per worker; jax.distributed finds its peers on its own).
#
#   ./launch_tpu.sh --name=my-pod --zone=us-east5-a --project=my-proj \
#       --type=v5p-64 --create --install [--delete] [--dry-run] -- \
#       experiments.hero --config=configs/hero.py:pod --workdir=/gcs/bucket/hero
#
# Steps, in order: create the VM (--create), put the code on all workers
# (copy of this checkout by default, or --clone=URL), install requirements
# (--install), run `python3 -m MODULE ARGS` on all workers with the output
# streamed to a local log (worker 0's output is the run's log), and delete the
# VM (--delete: only a VM this script created, recorded in .launch_tpu/; with
# --delete a VM created by this call is deleted on any failure too).
# --delete with no module after -- only deletes (a VM this script created).
# --remote-dir is a relative path under each worker's home (default hybrid_rl).
# Flags fall back to $TPU_NAME, $ZONE, $PROJECT, $TPU_TYPE, $TPU_RUNTIME.
# --dry-run prints every command and runs none; either way the config is checked here first.
set -euo pipefail

name=${TPU_NAME:-}
zone=${ZONE:-}
project=${PROJECT:-}
tpu_type=${TPU_TYPE:-v4-8}
runtime=${TPU_RUNTIME:-tpu-ubuntu2204-base}
create=0
install=0
delete=0
dry_run=0
check=1
spot=0
clone_url=""
remote_dir="hybrid_rl"
log_file=""

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  echo "options: --name --zone --project --type --runtime --create --spot --clone=URL"
  echo "         --remote-dir=DIR --install --log=FILE --delete --dry-run --no-check -- MODULE [ARGS...]"
}

die() {
  echo "launch_tpu.sh: $*" >&2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --type=*) tpu_type=${1#*=} ;;
    --runtime=*) runtime=${1#*=} ;;
    --clone=*) clone_url=${1#*=} ;;
    --remote-dir=*) remote_dir=${1#*=} ;;
    --log=*) log_file=${1#*=} ;;
    --create) create=1 ;;
    --spot) spot=1 ;;
    --install) install=1 ;;
    --delete) delete=1 ;;
    --dry-run) dry_run=1 ;;
    --no-check) check=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (put the experiment after --)" ;;
  esac
  shift
done

delete_only=0
if [[ $# -eq 0 && $delete -eq 1 && $create -eq 0 && $install -eq 0 ]]; then
  delete_only=1
fi
[[ $# -ge 1 || $delete_only -eq 1 ]] || {
  usage >&2; die "no experiment module given (e.g. -- experiments.train ...)"; }
[[ -n $name ]] || die "set --name or \$TPU_NAME"
[[ $name =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
  die "--name='$name': expected a TPU name (lower-case letters, digits and -)"
[[ -n $zone ]] || die "set --zone or \$ZONE"
# It goes into `rm -rf ~/DIR` on every worker: a plain relative path only.
[[ $remote_dir =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$ &&
   ! $remote_dir =~ (^|/)\.\.?(/|$) ]] ||
  die "--remote-dir='$remote_dir': expected a relative path under the workers' home (letters, digits, _ . - and /; no .., spaces or shell characters)"
module=""
if [[ $delete_only -eq 0 ]]; then
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_.]*$ ]] || die "module '$1' is not a Python module path"
  module=$1
  shift
fi
[[ $tpu_type =~ ^(v2|v3|v4|v5p|v5e|v5litepod|v6e)-[0-9]+$ ]] ||
  die "--type='$tpu_type': expected a TPU type such as v4-8, v5p-64, v5litepod-16 or v6e-8"
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The experiment's config values, checked here before any VM is made or paid for
# (--no-check skips it, e.g. where this machine lacks the requirements).
if [[ $delete_only -eq 0 && $check -eq 1 ]]; then
  check_out=$(cd "$repo_root" && HYBRID_RL_CHECK_CONFIG_ONLY=1 JAX_PLATFORMS=cpu \
              python3 -m "$module" "$@" 2>&1) ||
    die "the config does not pass its checks (nothing was started): $(tail -n 1 <<<"$check_out")"
fi
state_file="$repo_root/.launch_tpu/$name.created"
log_file=${log_file:-"$repo_root/logs/$name-$(date +%Y%m%d-%H%M%S).log"}

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -n $project ]] && where+=(--project="$project")

# Prints the command; runs it unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  [[ $dry_run -eq 1 ]] || "$@"
}

on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$1"
}

delete_vm() {
  if [[ -f $state_file || ($dry_run -eq 1 && $create -eq 1) ]]; then
    run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet
    run rm -f "$state_file"
  else
    echo "launch_tpu.sh: not deleting $name: this script did not create it ($state_file missing)" >&2
  fi
}

tarball=""
created_now=0
finished=0
# On any exit: remove the tarball; with --delete, a VM this call created is
# deleted even when a step failed (it would otherwise keep running and billing).
# shellcheck disable=SC2329  # invoked by the trap
cleanup() {
  local rc=$?
  [[ -z $tarball ]] || rm -f "$tarball"
  if [[ $rc -ne 0 && $finished -eq 0 && $delete -eq 1 && $created_now -eq 1 ]]; then
    echo "launch_tpu.sh: a step failed (exit $rc); deleting $name, which this call created" >&2
    delete_vm || true
  fi
  exit "$rc"
}
trap cleanup EXIT

if [[ $delete_only -eq 1 ]]; then
  delete_vm
  exit 0
fi

if [[ $create -eq 1 ]]; then
  create_cmd=("${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$tpu_type"
              --version="$runtime")
  [[ $spot -eq 1 ]] && create_cmd+=(--spot)
  run "${create_cmd[@]}"
  created_now=1
  run mkdir -p "$(dirname "$state_file")"
  [[ $dry_run -eq 1 ]] || date -u +%FT%TZ > "$state_file"
fi

# Expanded on the workers, not here.
# shellcheck disable=SC2088
rdir="~/$(printf '%q' "$remote_dir")"
if [[ -n $clone_url ]]; then
  on_all_workers "rm -rf $rdir && git clone --depth=1 $(printf '%q' "$clone_url") $rdir"
else
  # The tracked files of this checkout (uncommitted edits included), as one tarball.
  tarball=$(mktemp -t hybrid_rl.XXXXXX.tar.gz)
  run bash -c "cd $(printf '%q' "$repo_root") && git ls-files -z | xargs -0 tar -czf $(printf '%q' "$tarball")"
  run "${gcloud_tpu[@]}" scp "$tarball" "$name:~/hybrid_rl.tar.gz" "${where[@]}" --worker=all
  on_all_workers "rm -rf $rdir && mkdir -p $rdir && tar -xzf ~/hybrid_rl.tar.gz -C $rdir"
fi

if [[ $install -eq 1 ]]; then
  # The pinned jax[tpu] / libtpu that experiments.compile_pod checked the presets with.
  on_all_workers "cd $rdir && python3 -m pip install -q -U pip && python3 -m pip install -q -r requirements.txt -r requirements-tpu.txt"
fi

args=""
[[ $# -gt 0 ]] && printf -v args ' %q' "$@"
run mkdir -p "$(dirname "$log_file")"
remote="cd $rdir && python3 -m ${module}${args}"
echo "+ (output of all workers -> $log_file)"
status=0
if [[ $dry_run -eq 1 ]]; then
  on_all_workers "$remote"
else
  on_all_workers "$remote" 2>&1 | tee "$log_file" || status=$?
fi

[[ $delete -eq 0 ]] || delete_vm
finished=1
exit "$status"
