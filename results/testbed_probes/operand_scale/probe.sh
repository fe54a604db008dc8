#!/bin/bash
# Record of a probe run at commit ce5b961 (2026-11-24); kept as written then, not maintained: the package has changed since.
# Slice probe: direct_fraction + operand scale; SFT then GRPO 40 x 32 x 8 at lr 1e-4, then per-kind modes.
kinds=$(realpath "$(dirname "$0")")/kinds.py
cd /work/main && . .venv/bin/activate
name=$1; frac=$2; scale=$3; sft=$4; shift 4
PYTHONPATH=. python -m experiments.quickstart --workdir=/work/runs/tb3/$name --config.recipes=slice \
  --config.data.synthetic.direct_fraction=$frac --config.data.synthetic.operand_scale=$scale --config.sft.steps=$sft \
  --config.grpo.steps=40 --config.grpo.batch_size=32 --config.grpo.learning_rate=1e-4 --config.eval.every=10 \
  --config.eval.max_examples=200 --config.eval.num_samples=2 --config.train.log_every=2 --config.log.progress=False "$@" \
  > /work/runs/tb3/$name.log 2>&1
for st in sft grpo; do
PYTHONPATH=. python "$kinds" /work/runs/tb3/$name/seed0/$st /work/runs/tb3/$name/data $frac 1.0 $scale > /work/runs/tb3/${name}_kinds_$st.log 2>&1
done
