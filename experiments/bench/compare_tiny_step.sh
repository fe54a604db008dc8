#!/usr/bin/env bash
# The quickstart slice's GRPO step (tiny model, 64 prompts x 8 samples x <= 64 tokens, the
# settings of configs/default.py:tiny at 276c3fe, the code issue #20 timed) at 276c3fe and
# at a later commit, alternating on one machine.
#   experiments/bench/compare_tiny_step.sh NEW_COMMIT OUT_DIR [ROUNDS]
# Both start from random weights (responses run to 64 tokens: the same work on both
# sides); metrics.jsonl of each run lands in OUT_DIR/<commit>_<round>/.
set -euo pipefail
new=$1 out=$(realpath -m "$2") rounds=${3:-2}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
mkdir -p "$out"
for commit in 276c3fe "$new"; do
  [ -d "$out/src_$commit" ] || git -C "$repo" worktree add --detach "$out/src_$commit" "$commit" >/dev/null
done
python - <<'PY'
import jax, json
from hybrid_rl.eval import throughput
print(json.dumps({"matmul_peak_gflops": throughput.measure_matmul_peak() / 1e9}))
PY
for round in $(seq 1 "$rounds"); do
  for commit in 276c3fe "$new"; do
    work="$out/${commit}_$round"
    rm -rf "$work"
    (cd "$out/src_$commit" && python -m experiments.train --config=configs/default.py:tiny \
        --config.stage=grpo --config.train.steps=4 --config.train.checkpoint_every=4 \
        --config.train.log_every=1 --config.train.batch_size=64 \
        --config.sampling.max_new_tokens=64 --config.sampling.num_samples=8 \
        --config.log.progress=False --config.data.data_dir="$out/data_$commit" \
        --workdir="$work" > "$work.log" 2>&1)
    python - "$work/metrics.jsonl" "$commit" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # the first step compiles
keys = ("seconds_sampling", "seconds_verifying", "seconds_training", "seconds_rollout_and_update")
print(sys.argv[2], {k: round(statistics.median(r[k] for r in rows), 2) for k in keys})
PY
  done
done
