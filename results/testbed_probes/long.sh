#!/bin/bash
# Record of a probe run at commit e52519d (2026-11-24); kept as written then, not maintained: the package has changed since.
# 150 GRPO steps on fresh prompts (all families) from probe b's SFT, warmup 10, b2 0.999.
cd /work/main && . .venv/bin/activate
PYTHONPATH=. python -m experiments.train --config=configs/default.py:tiny --config.stage=grpo \
  --config.init_from=/work/runs/tb/b/seed0/sft --config.data.synthetic.num_train=30000 \
  --config.data.data_dir=/work/runs/tb/b/data --config.data.train_split='train[50%:]' \
  --config.optim.b2=0.999 --config.train.steps=150 --config.train.batch_size=32 \
  --config.optim.learning_rate=2e-4 --config.optim.schedule=constant --config.optim.warmup_steps=10 \
  --config.sampling.num_samples=8 --config.eval.every=25 --config.eval.max_examples=200 \
  --config.eval.num_samples=2 --config.train.log_every=5 --config.log.progress=False \
  --workdir=/work/runs/tb/long_lr2e-4 > /work/runs/tb/long_lr2e-4.log 2>&1
