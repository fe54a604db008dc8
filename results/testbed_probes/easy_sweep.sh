#!/bin/bash
# Record of a probe run at commit e52519d (2026-11-24); kept as written then, not maintained: the package has changed since.
# GRPO on easy-family prompts only, from probe b's SFT (1200 steps): does RL move validation?
cd /work/main && . .venv/bin/activate
for lr in "$@"; do
PYTHONPATH=. python -m experiments.train --config=configs/default.py:tiny --config.stage=grpo \
  --config.init_from=/work/runs/tb/b/seed0/sft --config.data.synthetic.num_train=30000 \
  --config.data.data_dir=/work/runs/tb/b/data --config.data.train_split='train[50%:]' \
  --config.data.train_families=easy --config.optim.b2=0.999 \
  --config.train.steps=60 --config.train.batch_size=32 --config.optim.learning_rate=$lr \
  --config.optim.schedule=constant --config.optim.warmup_steps=0 --config.sampling.num_samples=8 \
  --config.eval.every=15 --config.eval.max_examples=200 --config.eval.num_samples=2 \
  --config.train.log_every=5 --config.log.progress=False --workdir=/work/runs/tb/e_lr$lr > /work/runs/tb/e_lr$lr.log 2>&1
done
