"""Reinforce-Ada vs GRPO: `python -m experiments.reinforce_ada --config=configs/reinforce_ada.py:tiny`.

Presets:
  tiny  the embedded default: tiny student SFT, then GRPO (n) / Ada-Pos / Ada-Balance, 3 seeds
  micro CI-sized
  pod   the paper's setting (Qwen2.5-Math-1.5B, MATH; n=4, M=8, N=4, prompt batch 512,
        lr 1e-6, clip 0.2/0.28, dual clip 10, token-mean, no KL) for a TPU v4-64 slice
"""
import ml_collections

from configs import default
from configs import pod_models


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in ("tiny", "micro", "pod"):
    raise ValueError(f"unknown preset {preset!r} for configs/reinforce_ada.py "
                     "(choose tiny, micro or pod)")
  config = default.get_config("micro" if preset == "micro" else "tiny")
  config.preset = preset
  config.stage = "reinforce_ada"
  config.num_seeds = 3
  config.arms = "grpo,ada_pos,ada_balance,dynamic"
  config.rl.ada.update(n=4, round_size=8, max_rounds=4, threshold=0.7, global_stats=True)
  config.rl.pg.update(epsilon_low=0.2, epsilon_high=0.28, dual_clip=10.0, kl_coef=0.0,
                      aggregation="token_mean")
  config.rl.std_mode = "none"  # Reinforce-Ada's advantage: r - pool mean, no std
  config.sft = ml_collections.ConfigDict(dict(
      steps=400, batch_size=32, learning_rate=3e-3, schedule="cosine", warmup_steps=30,
      split="train[:50%]"))
  config.grpo = ml_collections.ConfigDict(dict(
      steps=40, batch_size=16, learning_rate=1e-4, schedule="constant", warmup_steps=0,
      split="train[50%:]"))
  config.eval.max_examples = 200  # learning curves on validation
  config.final_eval_split = "test"
  if preset == "micro":
    config.num_seeds = 1
    config.rl.ada.update(n=2, round_size=4, max_rounds=2)
    config.sft.update(steps=4, batch_size=8)
    config.grpo.update(steps=2, batch_size=4)
    config.eval.update(every=2, max_examples=8)
  elif preset == "pod":
    config.num_seeds = 1
    config.init_from = "/path/to/Qwen2.5-Math-1.5B"  # a local HF checkpoint directory
    config.tokenizer.path = config.init_from
    config.data.update(name="math", manual_dir="/path/to/math_jsonl", prompt_style="chat",
                       instruction="Please reason step by step, and put your final answer "
                       "within \\boxed{}.", max_prompt_len=512)
    config.model.compute_dtype = "bfloat16"
    config.sampling.update(max_new_tokens=3072, temperature=1.0, engine="continuous")
    config.sft.steps = 0  # start from the released model
    config.grpo.update(steps=400, batch_size=512, learning_rate=1e-6, split="train")
    config.optim.grad_clip_norm = 1.0
    # MATH has no validation split. 128 prompts x 32 samples a generate call: 512 x 32
    # rows of KV cache needed 54 GB a chip (results/compile_pod/reinforce_ada_pod.md).
    config.eval.update(split="test", every=50, num_samples=32, max_examples=500, batch_size=128)
    config.model = pod_models.model_block("Qwen2.5-Math-1.5B")
    # TPU v4-64: 32 chips on 8 hosts; parameters and Adam moments FSDP-sharded 4-way.
    config.parallel.update(mesh_shape=(8, 4, 1), num_devices=32, tpu_type="v4-64")
    # Rounds sample up to prompts x M rows at once (the first round: all 512 x 8).
    config.plans = ml_collections.ConfigDict({"grpo": dict(
        rollout_rows=512 * 8, train_rows=512 * 4, num_samples=8, objective="grpo",
        models={"policy": ("model", True)},
        samplers=("policy",), logit_models=())})
    config.rl.minibatches = 4  # 512 prompts x n=4 -> 4 updates of 512 rows
    config.train.grad_accum_steps = 16  # 1 row per device per micro-batch: 3072 x 152k logits
    config.train.micro_batch_rows = 0  # 8 is the tiny models' CPU setting
  if preset == "tiny":
    default.learning_curves(config, config.grpo.steps)
  return config
