"""The pod presets' own code path at toy size: experiments.rehearse_pod runs the HERO pod
preset's experiment in 2 processes (jax.distributed) on 8 CPU devices, with a Hugging Face
policy and sequence-classification reward model and MATH-format JSONL written as the
preset expects them; the rehearsal changes only sizes, steps, paths and the mesh."""
import json
import os

import ml_collections
import pytest

from tests import helpers

# What a rehearsal may change in a pod preset: sizes, steps, paths, the mesh, and
# (--quick) the HERO arms.
ALLOWED = {"num_seeds", "data.manual_dir", "data.max_prompt_len", "sampling.max_new_tokens",
           "sampling.num_samples", "parallel.num_devices", "parallel.mesh_shape",
           "train.grad_accum_steps", "eval.max_examples", "eval.batch_size", "eval.num_samples",
           "eval.every", "reward.rm_batch_rows", "init_from", "teacher_init_from",
           "student_init_from", "tokenizer.path", "reward.rm_from", "hero.regimes",
           "hero.methods", "hero.ablations"}
SIZE_FIELDS = {"steps", "batch_size", "num_samples", "hidden_size", "intermediate_size",
               "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size",
               "attention_chunk", "logits_chunk"}


def _leaves(config, prefix=""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


@pytest.mark.parametrize("preset", ["configs/hero.py:pod", "configs/reinforce_ada.py:pod",
                                    "configs/sparse_to_dense.py:pod",
                                    "configs/sparse_to_dense.py:pod_llama"])
def test_a_rehearsal_changes_only_sizes_steps_paths_and_the_mesh(preset):
  from experiments import rehearse_pod
  from configs import hero, reinforce_ada, sparse_to_dense
  module = {"hero": hero, "reinforce_ada": reinforce_ada,
            "sparse_to_dense": sparse_to_dense}[preset.split("/")[1].split(".")[0]]
  config = module.get_config(preset.split(":")[1])
  paths = {k: f"/toy/{k}" for k in ("data", "policy", "teacher", "student", "reward model")}
  changed = rehearse_pod.overrides(config, paths, steps=2, devices=8, vocab=320, quick=True)
  for key in changed:
    assert key in ALLOWED or key.split(".")[-1] in SIZE_FIELDS, key
  before = dict(_leaves(config))
  for key in ("model.compute_dtype", "model.remat", "sampling.chunks", "rl.minibatches",
              "train.micro_batch_rows", "data.prompt_style", "data.name"):
    if key in before:
      assert key not in changed, key
  data, fsdp, tensor = changed["parallel.mesh_shape"]
  assert data * fsdp * tensor == 8
  # Each axis the preset uses is kept.
  for axis, before_size, toy in zip("dft", config.parallel.mesh_shape, (data, fsdp, tensor)):
    assert (before_size > 1) == (toy > 1), (axis, config.parallel.mesh_shape, (data, fsdp, tensor))


def test_toy_models_keep_the_family_flags_gqa_ratio_and_rope():
  from experiments import rehearse_pod
  from configs import pod_models
  for name in ("Qwen2.5-Math-1.5B", "Qwen3-4B-Base", "Llama-3.3-70B-Instruct"):
    block = pod_models.model_block(name)
    toy = rehearse_pod.toy_config(block, 320)
    assert (toy.qk_norm, toy.qkv_bias, toy.tie_embeddings, toy.rope_theta) == (
        block.qk_norm, block.qkv_bias, block.tie_embeddings, block.rope_theta)
    assert toy.num_heads // toy.num_kv_heads == block.num_heads // block.num_kv_heads
    assert (toy.rope_scaling is not None) == name.startswith("Llama")
  rm = rehearse_pod.toy_config(pod_models.model_block("Skywork-Reward-V2-Qwen3-4B",
                                                      num_labels=1), 320)
  assert rm.num_labels == 1


def test_hero_pod_preset_runs_end_to_end_in_two_processes(tmp_path):
  workdir = tmp_path / "hero"
  proc = helpers.run_module("experiments.rehearse_pod", "--config=configs/hero.py:pod",
                            f"--workdir={workdir}", "--quick", timeout=1200)
  with open(workdir / "rehearsal.json") as f:
    report = json.load(f)
  assert [r["returncode"] for r in report["results"]] == [0, 0], proc.stdout[-3000:]
  assert {"seed0/eval_start", "seed0/arms/all-hero/grpo", "seed0/arms/all-hero/eval"} <= set(
      report["finished_stages"])
  grpo = workdir / "run" / "seed0" / "arms" / "all-hero" / "grpo"
  with open(grpo / "config.json") as f:
    stage = json.load(f)
  # The preset's settings ran as they are (chunks, micro-batching, dtype, memory settings).
  assert stage["model"]["compute_dtype"] == "bfloat16" and stage["model"]["remat"] == "full"
  assert stage["sampling"]["chunks"] == 4 and stage["rl"]["minibatches"] == 4
  assert stage["reward"]["mode"] == "hero" and stage["reward"]["rm_from"].endswith("reward_model")
  assert stage["distributed"]["num_processes"] == 2
  rows = [json.loads(line) for line in open(grpo / "metrics.jsonl")]
  assert rows[-1]["step"] == 2
  assert all(r["rm_score_mean"] != 0 for r in rows)  # the HF reward model scored
  assert os.path.exists(workdir / "run" / "tables" / "hero_main.md")
  # What the stage held on a device between steps (live arrays, measured before its first
  # step: later steps may overlap orbax's write of the previous checkpoint) is what
  # compile_pod counts as its resident arrays for the same config.
  predicted = helpers.run_script_result(RESIDENT.replace("GRPO_DIR", str(grpo)))
  with open(grpo / "summary.json") as f:
    measured = json.load(f)["held_bytes_device0_first_step"]
  assert abs(measured - predicted["bytes"]) <= 0.1 * predicted["bytes"], (measured, predicted)


# compile_pod's resident figure of the rehearsed HERO stage: the policy's train state on the
# 8-device mesh, the reward model on one process's 4 devices (as grpo_stage places it).
RESIDENT = r"""
import json, os
import jax, ml_collections
from experiments import compile_pod
from hybrid_rl.models import hf_io
from hybrid_rl.parallel import sharding
config = ml_collections.ConfigDict(json.load(open(os.path.join("GRPO_DIR", "config.json"))))
with open(os.path.join(config.reward.rm_from, "config.json")) as f:
  rm = hf_io.config_from_hf(json.load(f))
rm_block = ml_collections.ConfigDict({
    f: getattr(rm, f) for f in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                                "num_heads", "num_kv_heads", "head_dim", "rope_theta",
                                "tie_embeddings", "qkv_bias", "qk_norm", "num_labels",
                                "max_position_embeddings")})
rm_block.update(compute_dtype=config.model.compute_dtype, param_dtype="float32")
mesh = sharding.make_mesh(tuple(config.parallel.mesh_shape))
host = sharding.make_mesh((1, -1, 1), jax.devices()[:4])
plan = lambda models: ml_collections.ConfigDict({
    "models": models, "num_samples": config.sampling.num_samples,
    "rollout_rows": config.train.batch_size * config.sampling.num_samples})
total = (compile_pod.resident_bytes(config, plan({"policy": ("model", True)}), mesh)
         + compile_pod.resident_bytes(config, plan({"rm": (rm_block, False)}), host))
print("RESULT" + json.dumps({"bytes": total}))
"""
