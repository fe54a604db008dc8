#!/bin/bash
# Record of a probe run at commit 8488db0 (2026-11-24); kept as written then, not maintained: the package has changed since.
# Probe: probe b's SFT (1200 steps, worked solutions only) fine-tuned 300 more steps on a
# train stream where 30% of solutions are answer-only, then GRPO 40 x 32 x 8 on fresh prompts.
cd /work/main && . .venv/bin/activate
common="--config=configs/default.py:tiny --config.data.data_dir=/work/runs/tb/b/data --config.data.synthetic.direct_fraction=0.3 --config.log.progress=False"
PYTHONPATH=. python -m experiments.train $common --config.stage=sft --config.init_from=/work/runs/tb/b/seed0/sft \
  --config.data.train_split='train[:50%]' --config.train.steps=300 --config.train.batch_size=32 \
  --config.optim.learning_rate=1e-3 --config.optim.warmup_steps=10 --config.train.log_every=20 \
  --workdir=/work/runs/tb2/mix_sft > /work/runs/tb2/mix_sft.log 2>&1
PYTHONPATH=. python /work/runs/diag2/modes.py /work/runs/tb2/mix_sft /work/runs/tb/b/data 0.3 > /work/runs/tb2/mix_sft_modes.log 2>&1
PYTHONPATH=. python -m experiments.train $common --config.stage=grpo --config.init_from=/work/runs/tb2/mix_sft \
  --config.data.train_split='train[50%:]' --config.train.steps=40 --config.train.batch_size=32 \
  --config.optim.learning_rate=1e-4 --config.optim.schedule=constant --config.optim.warmup_steps=0 \
  --config.sampling.num_samples=8 --config.eval.every=10 --config.eval.max_examples=200 \
  --config.eval.num_samples=2 --config.train.log_every=2 --workdir=/work/runs/tb2/mix_grpo > /work/runs/tb2/mix_grpo.log 2>&1
PYTHONPATH=. python /work/runs/diag2/modes.py /work/runs/tb2/mix_grpo /work/runs/tb/b/data 0.3 > /work/runs/tb2/mix_grpo_modes.log 2>&1
