#!/bin/bash
# Record of a probe run at commit 8488db0 (2026-11-24); kept as written then, not maintained: the package has changed since.
# GRPO on fresh prompts (train stream) from probe b's SFT, Adam eps near the gradient scale.
cd /work/main && . .venv/bin/activate
run() {  # name lr eps [extra overrides]
  name=$1; lr=$2; eps=$3; shift 3
  PYTHONPATH=. python -m experiments.train --config=configs/default.py:tiny --config.stage=grpo \
    --config.init_from=/work/runs/tb/b/seed0/sft --config.data.synthetic.num_train=30000 \
    --config.data.data_dir=/work/runs/tb/b/data --config.data.train_split='train[50%:]' \
    --config.optim.b2=0.999 --config.optim.eps=$eps --config.train.steps=40 --config.train.batch_size=32 \
    --config.optim.learning_rate=$lr --config.optim.schedule=constant --config.optim.warmup_steps=5 \
    --config.optim.weight_decay=0 \
    --config.sampling.num_samples=8 --config.eval.every=10 --config.eval.max_examples=200 \
    --config.eval.num_samples=2 --config.train.log_every=2 --config.log.progress=False "$@" \
    --workdir=/work/runs/tb2/$name > /work/runs/tb2/$name.log 2>&1
}
for spec in "$@"; do run $spec; done
