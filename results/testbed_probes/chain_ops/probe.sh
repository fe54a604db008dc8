#!/bin/bash
# Record of a probe run at commit 02d8140 (2026-11-24); kept as written then, not maintained: the package has changed since.
# Slice probe: chain_ops + hard_share at direct 0.5, scale 9; SFT then GRPO 60 x 32 x 8 at lr 1e-4, then per-kind modes.
kinds=$(realpath "$(dirname "$0")")/../operand_scale/kinds.py
cd "$(dirname "$0")/../../.." && . /work/main/.venv/bin/activate
name=$1; ops=$2; hard=$3; sft=$4; shift 4
PYTHONPATH=. python -m experiments.quickstart --workdir=/work/runs/tb4/$name --config.recipes=slice \
  --config.data.synthetic.direct_fraction=0.5 --config.data.synthetic.chain_ops=$ops --config.data.synthetic.hard_share=$hard \
  --config.sft.steps=$sft --config.grpo.steps=60 --config.grpo.batch_size=32 --config.grpo.learning_rate=1e-4 --config.eval.every=10 \
  --config.eval.max_examples=200 --config.eval.num_samples=2 --config.train.log_every=2 --config.log.progress=False "$@" \
  > /work/runs/tb4/$name.log 2>&1
for st in sft grpo; do
PYTHONPATH=. python "$kinds" /work/runs/tb4/$name/seed0/$st /work/runs/tb4/$name/data 0.5 1.0 9 $hard $ops > /work/runs/tb4/${name}_kinds_$st.log 2>&1
done
