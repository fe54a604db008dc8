"""Sparse-to-dense pipeline: `python -m experiments.sparse_to_dense --config=configs/sparse_to_dense.py:tiny`.

Stages (each a block of this config, chained by checkpoint):
  teacher_sft   cold start of the larger teacher (tiny presets only)
  student_sft   cold start of the small student (tiny presets only)
  teacher_grpo  Stage 1: GRPO on the teacher with the labelled prompt budget
  fkl           Stage 2a: forward-KL warmup of the student on teacher rollouts
  opd           Stage 2b: on-policy distillation on student rollouts (no labels)
  student_grpo  Stage 3: student GRPO on held-out labelled prompts

Presets:
  tiny       the embedded default (tiny teacher -> tiny student), 3 seeds
  micro      CI-sized
  pod        Qwen3-8B teacher -> Qwen3-1.7B student on MATH, TPU v5p-128
  pod_llama  Llama-3.3-70B-Instruct -> Llama-3.1-8B-Instruct, TPU v5p-256
"""
import ml_collections

from configs import default
from configs import pod_models

PRESETS = ("tiny", "micro", "pod", "pod_llama")


def _block(**kw) -> ml_collections.ConfigDict:
  base = dict(steps=0, batch_size=16, learning_rate=1e-4, schedule="constant", warmup_steps=0,
              split="train")
  base.update(kw)
  return ml_collections.ConfigDict(base)


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r} for configs/sparse_to_dense.py "
                     f"(choose {', '.join(PRESETS)})")
  micro = preset == "micro"
  config = default.get_config("micro" if micro else "tiny")
  config.preset = preset
  config.stage = "sparse_to_dense"
  config.num_seeds = 3
  config.arms = "recipe,stage3,replay,direct_grpo,pre_rl_bridge,fkl_only,opd_only"
  config.teacher_init_from = ""  # "" = cold start by teacher_sft; else a checkpoint
  config.student_init_from = ""
  config.teacher_model = default.model_block("micro" if micro else "tiny_teacher")
  config.student_model = default.model_block("micro" if micro else "tiny")
  # Labelled prompts: Stage 1 and direct student GRPO share one budget; Stage 3
  # uses a held-out labelled slice; the bridge uses unlabelled prompts.
  config.teacher_sft = _block(steps=500, batch_size=32, learning_rate=3e-3, schedule="cosine",
                              warmup_steps=30, split="train[:40%]")
  config.student_sft = _block(steps=400, batch_size=32, learning_rate=3e-3, schedule="cosine",
                              warmup_steps=30, split="train[:40%]")
  config.teacher_grpo = _block(steps=60, batch_size=16, num_samples=8, split="train[40%:60%]")
  config.fkl = _block(steps=100, batch_size=32, learning_rate=3e-4, split="train[60%:80%]",
                      num_samples=1, kind="fkl_sampled", top_k=8)  # fkl_sampled | fkl_full | fkl_topk
  config.opd = _block(steps=60, batch_size=16, num_samples=4, split="train[60%:80%]",
                      kind="opd_pg", jsd_beta=0.5, opd_clip_epsilon=0.0)  # opd_pg | rkl_full | jsd
  config.student_grpo = _block(steps=40, batch_size=16, num_samples=8, split="train[80%:]")
  config.final_eval_split = "test"
  if micro:
    config.num_seeds = 1
    for name in ("teacher_sft", "student_sft", "fkl"):
      config[name].update(steps=3, batch_size=8)
    for name in ("teacher_grpo", "opd", "student_grpo"):
      config[name].update(steps=2, batch_size=4, num_samples=2)
    config.eval.update(max_examples=8)
  elif preset in ("pod", "pod_llama"):
    llama = preset == "pod_llama"
    config.num_seeds = 1
    teacher, student = (("Llama-3.3-70B-Instruct", "Llama-3.1-8B-Instruct") if llama
                        else ("Qwen3-8B", "Qwen3-1.7B"))
    config.teacher_model = pod_models.model_block(teacher)
    config.student_model = pod_models.model_block(student)
    config.teacher_init_from = f"/path/to/{teacher}"  # HF checkpoint directories
    config.student_init_from = f"/path/to/{student}"
    config.tokenizer.path = config.student_init_from  # teacher and student share a vocabulary
    config.data.update(name="math", manual_dir="/path/to/math_jsonl", prompt_style="chat",
                       instruction="Please reason step by step, and put your final answer "
                       "within \\boxed{}.", max_prompt_len=1024)
    config.sampling.update(max_new_tokens=4096, temperature=1.0, chunks=4 if llama else 2,
                           engine="continuous")
    config.teacher_sft.steps = config.student_sft.steps = 0  # released instruct models
    config.teacher_grpo.update(steps=200, batch_size=256, num_samples=8, learning_rate=1e-6,
                               split="train[:50%]")
    # Llama: 512 prompts, so that each of the 16 micro-batches (32 rows) splits over the
    # mesh's 4 x 8 batch devices; with 256 the TPU compiler failed the train step ("Slice
    # dim size 4096 greater than dynamic slice dimension: 512", compile_pod 2026-12-05).
    config.fkl.update(steps=200, batch_size=512 if llama else 256, learning_rate=1e-6,
                      kind="fkl_topk", top_k=64, split="train[50%:80%]")
    config.opd.update(steps=200, batch_size=256, num_samples=4, learning_rate=1e-6,
                      split="train[50%:80%]")
    config.student_grpo.update(steps=100, batch_size=256, num_samples=8, learning_rate=1e-6,
                               split="train[80%:]")
    config.rl.minibatches = 4
    config.train.grad_accum_steps = 16
    config.train.micro_batch_rows = 0  # 8 is the tiny models' CPU setting
    # MATH has no validation split; 128 prompts x 16 samples / sampling.chunks a generate
    # call, the rollout's rows (results/compile_pod/).
    config.eval.update(split="test", num_samples=16, temperature=0.6, top_p=0.95, max_examples=500,
                       batch_size=128)
    if llama:
      # Mesh axes that factor the 4x4x8 torus: (4, 16, 2) needed a split physical axis,
      # on which the TPU compiler failed the train step (results/compile_pod/README.md).
      config.parallel.update(mesh_shape=(4, 8, 4), num_devices=128, tpu_type="v5p-256")
    else:
      # (4, 16, 1) factors the 4x4x4 torus; (8, 8, 1) needed a split physical axis, on
      # which the TPU compiler failed the train step (results/compile_pod/README.md).
      config.parallel.update(mesh_shape=(4, 16, 1), num_devices=64, tpu_type="v5p-128")
    # Each plan's rows from the experiment's own stage blocks (one description).
    rows = lambda block: config[block].batch_size * config[block].get("num_samples", 1)
    config.plans = ml_collections.ConfigDict({
        "stage 1: teacher GRPO": dict(
            rollout_rows=rows("teacher_grpo"), train_rows=rows("teacher_grpo"),
            num_samples=config.teacher_grpo.num_samples, objective="grpo",
            models={"teacher": ("teacher_model", True)}, samplers=("teacher",), logit_models=()),
        "stage 2a: forward-KL warmup": dict(
            rollout_rows=rows("fkl"), train_rows=rows("fkl"), num_samples=1,
            objective=config.fkl.kind, top_k=config.fkl.top_k,
            models={"student": ("student_model", True), "teacher": ("teacher_model", False)},
            samplers=("teacher",), logit_models=("teacher",)),
        "stage 2b: on-policy distillation": dict(
            rollout_rows=rows("opd"), train_rows=rows("opd"), num_samples=config.opd.num_samples,
            objective=config.opd.kind,
            models={"student": ("student_model", True), "teacher": ("teacher_model", False)},
            samplers=("student",), logit_models=("teacher",)),
        "stage 3: student GRPO": dict(
            rollout_rows=rows("student_grpo"), train_rows=rows("student_grpo"),
            num_samples=config.student_grpo.num_samples, objective="grpo",
            models={"student": ("student_model", True)}, samplers=("student",),
            logit_models=()),
    })
  if preset == "tiny":
    default.learning_curves(config, min(config.teacher_grpo.steps, config.student_grpo.steps))
  return config
