"""HERO main table and ablations: `python -m experiments.hero --config=configs/hero.py:tiny`.

Presets:
  tiny  the embedded default: tiny student SFT, tiny reward model trained on the
        SFT policy's own samples, GRPO arms (regime x method, ablations), 3 seeds
  micro CI-sized
  pod   the paper's setting (Qwen3-4B-Base policy, an HF sequence-classification
        reward model, math-verify, lr 1e-6, clip (0.2, 0.28), 8 rollouts,
        batch 512, mini-batch 128) for a TPU v5p-64 slice

Regimes pick the RL prompts (synthetic_math families): easy = integer answers a
strict checker verifies reliably; hard = answers with many equivalent forms,
where the strict rule verifier has false negatives (HERO's hard-to-verify
regime); mixed = both. The rule verifier is `hero.rule_verifier` (strict), the
oracle for evaluation the equivalence checker.
"""
import ml_collections

from configs import default
from configs import pod_models


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in ("tiny", "micro", "pod"):
    raise ValueError(f"unknown preset {preset!r} for configs/hero.py (choose tiny, micro or pod)")
  config = default.get_config("micro" if preset == "micro" else "tiny")
  config.preset = preset
  config.stage = "hero"
  config.num_seeds = 3
  config.hero = ml_collections.ConfigDict(dict(
      regimes="easy,hard,mixed", methods="rm,verifier,hero", rule_verifier="strict",
      # The paper: alpha = beta = 0.05 on easy-to-verify data, 0.1 on mixed / hard.
      alpha_easy=0.05, alpha_other=0.1,
      ablation_regime="easy", ablations=True, alphas="0.05,0.1,0.2",
      dense_ranges="none,neg,pos"))
  config.reward.update(variance_weighting=True, w_min=0.4, w_max=3.0, k=6.0,
                       placement="advantage", sigma_decay=0.9, naive_weight=0.5)
  config.rl.pg.update(epsilon_low=0.2, epsilon_high=0.28, kl_coef=0.0)
  config.sft = ml_collections.ConfigDict(dict(
      steps=400, batch_size=32, learning_rate=3e-3, schedule="cosine", warmup_steps=30,
      split="train[:50%]"))
  # The reward model's labelled prompts: 1600 of the SFT half (the RL half and the
  # validation / test splits stay unseen by it). A count, not a share: the stage
  # samples every prompt of its split, and the train stream is long.
  config.reward_model.update(split="train[:1600]", samples_per_prompt=4, holdout_fraction=0.2,
                             loss="pointwise")
  config.rm = ml_collections.ConfigDict(dict(
      steps=300, batch_size=32, learning_rate=1e-3, schedule="cosine", warmup_steps=20,
      split="train[:1600]"))
  config.grpo = ml_collections.ConfigDict(dict(
      steps=40, batch_size=16, learning_rate=1e-4, schedule="constant", warmup_steps=0,
      num_samples=8, split="train[50%:]"))
  config.final_eval_split = "test"
  if preset == "micro":
    config.num_seeds = 1
    config.hero.update(regimes="easy,hard", alphas="0.05,0.2", dense_ranges="none")
    config.sft.update(steps=4, batch_size=8)
    config.rm.update(steps=2, batch_size=8, split="train[:50%]")
    config.reward_model.split = "train[:50%]"
    config.reward_model.samples_per_prompt = 2
    config.grpo.update(steps=2, batch_size=4, num_samples=4)
    config.eval.update(max_examples=8)
  elif preset == "pod":
    config.num_seeds = 1
    config.init_from = "/path/to/Qwen3-4B-Base-sft"  # the SFT cold start, an HF directory
    config.tokenizer.path = config.init_from
    config.model = pod_models.model_block("Qwen3-4B-Base")
    config.reward.rm_from = "/path/to/reward-model"  # *ForSequenceClassification HF directory
    # 64 rows of 5k tokens a host per scoring call (16 a chip): 256 needed 97 GB a chip
    # (results/compile_pod/hero_pod.md).
    config.reward.rm_batch_rows = 64
    config.data.update(name="math", manual_dir="/path/to/math_jsonl", prompt_style="chat",
                       instruction="Please reason step by step, and put your final answer "
                       "within \\boxed{}.", max_prompt_len=1024)
    config.hero.rule_verifier = "equivalence"  # math-verify, as in the paper
    # MATH has no easy / hard families (the paper's regimes are its own data subsets):
    # every arm trains on all of MATH's training problems (a rehearsal found the easy
    # regime selecting nothing, experiments/rehearse_pod.py).
    config.hero.update(regimes="all", ablation_regime="all")
    config.model.compute_dtype = "bfloat16"
    config.sampling.update(max_new_tokens=4096, temperature=1.0, num_samples=8, chunks=4,
                           engine="continuous")
    config.sft.steps = 0
    config.rm.steps = 0
    config.grpo.update(steps=300, batch_size=512, learning_rate=1e-6, split="train",
                       num_samples=8)
    config.rl.minibatches = 4  # 512 x 8 rows, mini-batch 128 prompts
    config.train.grad_accum_steps = 16
    config.train.micro_batch_rows = 0  # 8 is the tiny models' CPU setting
    config.eval.update(split="test", num_samples=8, temperature=0.6, top_p=0.95, max_examples=500,
                       batch_size=512)  # MATH has no validation split
    # TPU v5p-64: 32 chips on 8 hosts; FSDP over 8 within a host's slice rows.
    config.parallel.update(mesh_shape=(4, 8, 1), num_devices=32, tpu_type="v5p-64")
    rm_block = pod_models.model_block("Skywork-Reward-V2-Qwen3-4B", num_labels=1)
    config.plans = ml_collections.ConfigDict({"grpo": dict(
        rollout_rows=512 * 8, train_rows=512 * 8, num_samples=8, objective="grpo",
        models={"policy": ("model", True), "reward model": (rm_block, False)},
        samplers=("policy",), logit_models=())})
  if preset == "tiny":
    default.learning_curves(config, config.grpo.steps)
  return config
