"""Single-stage configs for `experiments.train`: `--config=configs/default.py:PRESET`.

Presets:
  tiny          tiny student (~1M params) on synthetic_math; stage sft
  tiny_teacher  tiny teacher (several times larger); stage sft
  tiny_rm       tiny reward-model backbone (scalar head); stage sft
  micro         CI-sized model and data
  toy           a model-free regression stage (loop/checkpoint tests)
Choose the stage with --config.stage=sft|grpo|eval and chain stages with
--config.init_from=<previous stage workdir>.
"""
import ml_collections

MODEL_SIZES = {
    # hidden, mlp, layers, heads, kv heads, head dim
    "micro": (64, 128, 2, 4, 2, 16),
    "tiny": (128, 384, 4, 4, 2, 32),
    "tiny_teacher": (256, 768, 6, 8, 4, 32),
    "tiny_rm": (128, 384, 4, 4, 2, 32),
}


def model_block(size: str) -> ml_collections.ConfigDict:
  h, f, layers, heads, kv, d = MODEL_SIZES[size]
  return ml_collections.ConfigDict(dict(
      hidden_size=h, intermediate_size=f, num_layers=layers, num_heads=heads, num_kv_heads=kv,
      head_dim=d, rope_theta=10000.0, tie_embeddings=True, qkv_bias=False, qk_norm=False,
      num_labels=0, max_position_embeddings=1024, param_dtype="float32",
      compute_dtype="float32", **MEMORY_SETTINGS))


# How a model's activations are held (values unchanged): rematerialize each layer
# ("none" | "full" | "save_dots"), attention in query chunks and training logits in
# position chunks of that many (0: whole), the decode step's attention products
# ("sum" | "dot" | "auto": sum on CPU), and training attention ("chunked" | "splash":
# JAX's splash attention kernel, TPU only in practice). Pod presets set them from
# compiled figures.
MEMORY_SETTINGS = dict(remat="none", attention_chunk=0, logits_chunk=0, decode_attention="auto",
                       train_attention="chunked")


def learning_curves(config: ml_collections.ConfigDict, rl_steps: int, points: int = 5) -> None:
  """RL stages of `rl_steps` log every step and evaluate on validation at least
  `points` times (their last step included), so each curve they plot has that many."""
  config.train.log_every = 1
  config.eval.every = max(1, rl_steps // points)


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in ("toy",) + tuple(MODEL_SIZES):
    raise ValueError(f"unknown preset {preset!r} for configs/default.py "
                     f"(choose {', '.join(('toy',) + tuple(MODEL_SIZES))})")
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.seed = 0
  config.stage = "toy" if preset == "toy" else "sft"
  config.init_from = ""  # "" = random init; a stage workdir, HF directory or .gguf file

  config.model = model_block("tiny" if preset == "toy" else preset)
  if preset == "tiny_rm":
    config.model.num_labels = 1

  config.tokenizer = ml_collections.ConfigDict()
  config.tokenizer.path = ""  # "" = train a BPE on the synthetic train split
  config.tokenizer.vocab_size = 512

  config.data = ml_collections.ConfigDict()
  config.data.name = "synthetic_math"  # synthetic_math | gsm8k | math
  config.data.data_dir = ""  # "" = <workdir>/data
  config.data.manual_dir = ""  # JSONL files for gsm8k / math
  config.data.train_split = "train"
  config.data.train_families = ""  # RL prompts: "" = all, or a comma list (easy,hard)
  config.data.prompt_style = "plain"  # plain | chat
  config.data.instruction = ""
  config.data.system = ""
  config.data.max_prompt_len = 48
  # num_train: draws of the train stream (synthetic_math), enough that SFT and RL
  # see fresh problems; validation and test do not depend on it.
  config.data.synthetic = ml_collections.ConfigDict(dict(
      seed=0, num_train=30000, num_validation=200, num_test=400, max_level=1, operand_scale=9,
      families="easy,hard", direct_fraction=0.0, hard_share=0.5, chain_ops=0,
      hard_family="solve"))

  # trim_multiple: train batches drop the padding columns no row uses, keeping
  # prompt and response widths multiples of this (0: always the full P + R).
  # micro_batch_rows: forward/backward passes of at most this many rows, the
  # gradients accumulated exactly (0: one pass, or grad_accum_steps of them). The
  # tiny models' step on CPU is 2.5x faster in passes of 8 rows than in one of
  # 256 (1.5x for SFT's 32), as the activations then stay in cache
  # (experiments/bench/train_step.py --model=tiny); presets of large models set 0.
  # length_sorted (grpo stages, one device): rows ordered by length into micro-batches
  # of micro_batch_rows, each trimmed to its own width, so that a step over responses
  # of 14 to 128 tokens pays for the tokens present, not 128 in every row.
  config.train = ml_collections.ConfigDict(dict(
      steps=600, batch_size=64, checkpoint_every=100, keep_checkpoints=2, log_every=10,
      grad_accum_steps=1, micro_batch_rows=0 if preset in ("micro", "toy") else 8,
      trim_multiple=16, length_sorted=False,
      max_consecutive_skips=10))  # stop after this many non-finite steps in a row (0: never)

  # eps: Adam's denominator floor. Near the per-weight gradient scale it damps the
  # steps of weights whose gradients are mostly noise (policy gradients at small batches).
  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=2e-3, schedule="cosine", warmup_steps=30, weight_decay=0.01, b1=0.9,
      b2=0.98, eps=1e-8, grad_clip_norm=1.0))

  # chunks > 1: the static engine samples the batch in that many sequential slices (a
  # smaller KV cache). engine: static (one padded batch decoded to max_new_tokens) |
  # continuous (slots refilled as requests stop, each step reading the cache only up to
  # the longest live slot, or on TPU each slot to its own length). Static here: at toy
  # lengths its one compiled loop beats the engine's many small programs (README, Rollout
  # engines); the presets with long responses use continuous. slots 0: the static rows per
  # call (prompts x samples / chunks) rounded up to a power of two; decode_steps per host
  # check; read_buckets cache lengths compiled; active_buckets slot counts a call decodes
  # in the tail (continuous.active_slot_count; 1: powers of two); kv_layout slots | pages
  # (read by JAX's ragged paged attention kernel) | auto (pages on TPU); page_size tokens a
  # page.
  config.sampling = ml_collections.ConfigDict(dict(
      max_new_tokens=80, temperature=1.0, top_p=1.0, top_k=0, num_samples=8, chunks=1,
      engine="static", slots=0, decode_steps=16, read_buckets=8, active_buckets=8,
      kv_layout="auto", page_size=16))

  # sampling: fixed (GRPO, G = sampling.num_samples) | ada_pos | ada_balance | dynamic (DAPO).
  # advantage: grpo ((r - group mean) / std_mode's scale) | rloo (leave-one-out mean) |
  # reinforce_pp (group mean, then batch normalization); see algorithms/policy_gradient.py.
  config.rl = ml_collections.ConfigDict(dict(
      verifier="equivalence", std_mode="group", epochs=1, minibatches=1, mask_truncated=False,
      sampling="fixed", advantage="grpo"))
  # Reinforce-Ada: keep n per prompt, rounds of M = round_size, at most N = max_rounds.
  config.rl.ada = ml_collections.ConfigDict(dict(
      n=4, round_size=8, max_rounds=4, threshold=0.7, global_stats=True))
  # Dynamic sampling: at most max_batches prompt batches drawn per step.
  config.rl.dynamic = ml_collections.ConfigDict(dict(max_batches=4))
  # importance_level: token (PPO / GRPO ratios) | sequence (GSPO: the length-normalized
  # sequence ratio, clipped to [1 - sequence_epsilon_low, 1 + sequence_epsilon_high]).
  config.rl.pg = ml_collections.ConfigDict(dict(
      epsilon_low=0.2, epsilon_high=0.28, dual_clip=0.0, kl_coef=0.0, kl_estimator="k3",
      entropy_coef=0.0, aggregation="token_mean", tis_cap=0.0, importance_level="token",
      sequence_epsilon_low=3e-4, sequence_epsilon_high=4e-4))

  # Rewards (HERO and its baselines): verifier | rm | naive_sum | hero.
  config.reward = ml_collections.ConfigDict(dict(
      mode="verifier", rm_from="", naive_weight=0.5, alpha=0.1, beta=0.1, eps=1e-6,
      dense_range="both", variance_weighting=True, w_min=0.4, w_max=3.0, k=6.0,
      placement="advantage", sigma_decay=0.9, rm_batch_rows=256))

  config.verifier = ml_collections.ConfigDict(dict(num_workers=2, timeout_s=2.0))

  config.eval = ml_collections.ConfigDict(dict(
      split="validation", num_samples=4, temperature=1.0, top_p=1.0, max_examples=400,
      batch_size=100, every=0))

  # Reward-model stage (stage=reward_model): trained on the policy's own samples.
  config.reward_model = ml_collections.ConfigDict(dict(
      policy_from="", split="train[:50%]", samples_per_prompt=4, holdout_fraction=0.2,
      loss="pointwise"))

  # Distillation stage (stage=distill): the student (init_from) learns from teacher_from.
  # rollouts=teacher: kind fkl_sampled | fkl_full | fkl_topk (Stage 2a warmup);
  # rollouts=student: kind opd_pg | rkl_full | jsd (Stage 2b on-policy distillation).
  config.distill = ml_collections.ConfigDict(dict(
      teacher_from="", rollouts="teacher", kind="fkl_sampled", top_k=8, jsd_beta=0.5,
      opd_clip_epsilon=0.0))  # opd_pg: > 0 clips rho to [1 - eps, 1 + eps]; 0 disables

  # samples_every: GRPO writes samples_rows of a step's responses to samples.jsonl at
  # step 1 and every samples_every steps (0: never); evaluation writes all of its.
  config.log = ml_collections.ConfigDict(dict(progress=True, tensorboard=True,
                                              samples_every=10, samples_rows=4))

  # Device mesh (data, fsdp, tensor) over all processes' devices; -1 = the rest.
  # num_devices / tpu_type describe the target slice for experiments.compile_pod.
  config.parallel = ml_collections.ConfigDict(dict(mesh_shape=(-1, 1, 1), num_devices=1,
                                                   tpu_type="cpu"))
  # Multi-process runs (jax.distributed). On a multi-host TPU VM leave these
  # empty: JAX discovers them. Elsewhere set all three (or $JAX_COORDINATOR_ADDRESS,
  # $JAX_NUM_PROCESSES, $JAX_PROCESS_ID).
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=0, process_id=-1, timeout_s=300))

  # Model-free regression problem for the `toy` stage.
  config.toy = ml_collections.ConfigDict(dict(dim=8, noise=0.1, step_sleep_s=0.0))

  if preset == "toy":
    config.train.update(steps=40, batch_size=16, checkpoint_every=5, keep_checkpoints=3,
                        log_every=1)
    config.optim.update(learning_rate=0.1, warmup_steps=5, weight_decay=0.0, b2=0.999)
  elif preset == "micro":
    config.data.synthetic.update(num_train=300, num_validation=40, num_test=40)
    config.data.max_prompt_len = 40
    config.tokenizer.vocab_size = 300
    config.train.update(steps=4, batch_size=8, checkpoint_every=2, log_every=1)
    config.sampling.update(max_new_tokens=24, num_samples=4)
    config.eval.update(max_examples=16, batch_size=8, num_samples=2)
  return config
