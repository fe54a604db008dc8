#!/bin/bash
# Record of a probe run at commit 8488db0 (2026-11-24); kept as written then, not maintained: the package has changed since.
# Slice with answer-only SFT solutions mixed in: SFT 1200 steps then GRPO 40 x 32 x 8.
cd /work/main && . .venv/bin/activate
frac=$1; lr=$2; shift 2
PYTHONPATH=. python -m experiments.quickstart --workdir=/work/runs/tb2/direct_$frac \
  --config.recipes=slice --config.data.synthetic.direct_fraction=$frac --config.sft.steps=1200 \
  --config.grpo.steps=40 --config.grpo.batch_size=32 --config.grpo.learning_rate=$lr --config.eval.every=10 \
  --config.eval.max_examples=200 --config.eval.num_samples=2 --config.train.log_every=2 --config.log.progress=False "$@" \
  > /work/runs/tb2/direct_${frac}_lr$lr.log 2>&1
