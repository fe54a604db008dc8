r"""A pod preset's own experiment run end to end at toy size, in several processes.

  python -m experiments.rehearse_pod --config=configs/hero.py:pod --workdir=/tmp/rehearse_hero

What a pod would run is what this runs: the preset's experiment script
(config.stage -> experiments.<stage>) with the preset's config, every field
unchanged except
  sizes   the models (tiny models of the same families: qk_norm, qkv_bias, tied
          embeddings, the GQA ratio, RoPE theta, Llama-3's RoPE scaling, a
          sequence-classification head for reward models), batch, sample, eval and
          token counts, chunk lengths (attention_chunk, logits_chunk,
          reward.rm_batch_rows, grad_accum_steps scaled to the toy rows so that the
          chunked paths run), and with --quick the HERO arms (one regime, no ablations);
  steps   every stage with steps gets `--steps`;
  paths   Hugging Face directories written here exactly as the preset expects them
          (safetensors, config.json, a tokenizer with a chat template), and the
          preset's data in its format (MATH / GSM8K JSONL, problems of the synthetic
          task written as rows);
  mesh    the preset's (data, fsdp, tensor) scaled to --processes x --devices CPU
          devices, over jax.distributed (gloo).
Writes <workdir>/rehearsal.json (the command, the overrides, each process's exit
status and the stages that finished) and exits non-zero when a process failed.
The command's own --config.* overrides (--config.sampling.engine=continuous) are passed
on to the preset's run.
"""
import json
import os
import shlex
import socket
import subprocess
import sys
import time

from absl import flags
from flax import nnx
import ml_collections

from hybrid_rl import cli
from hybrid_rl import errors
from hybrid_rl.data import pipeline
from hybrid_rl.data import tokenizer as tokenizer_lib
from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer
from hybrid_rl.train import stage_io

SCRIPTS = {"hero": "experiments.hero", "reinforce_ada": "experiments.reinforce_ada",
           "sparse_to_dense": "experiments.sparse_to_dense"}
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
# Llama 3.1 / 3.3's config.json rope_scaling (their pod_models blocks keep only theta).
LLAMA3_ROPE_SCALING = (("factor", 8.0), ("low_freq_factor", 1.0), ("high_freq_factor", 4.0),
                       ("original_max_position_embeddings", 8192.0))
TOY = dict(hidden_size=64, intermediate_size=128, num_layers=2, head_dim=8, kv_heads=2)
PROMPT_TOKENS, NEW_TOKENS = 192, 24


def toy_config(block: ml_collections.ConfigDict, vocab_size: int) -> transformer.ModelConfig:
  """A tiny model of `block`'s family: its flags, GQA ratio and RoPE kept."""
  ratio = block.num_heads // block.num_kv_heads
  llama = block.get("name", "").startswith("Llama-3")
  return transformer.ModelConfig(
      vocab_size=vocab_size, hidden_size=TOY["hidden_size"],
      intermediate_size=TOY["intermediate_size"], num_layers=TOY["num_layers"],
      num_heads=TOY["kv_heads"] * ratio, num_kv_heads=TOY["kv_heads"], head_dim=TOY["head_dim"],
      rope_theta=block.rope_theta, rope_scaling=LLAMA3_ROPE_SCALING if llama else None,
      tie_embeddings=block.tie_embeddings, qkv_bias=block.qkv_bias, qk_norm=block.qk_norm,
      num_labels=block.get("num_labels", 0), max_position_embeddings=block.max_position_embeddings)


def write_tokenizer(path: str, texts: list[str]):
  """A byte-level BPE over the task's text with a chat template, saved as transformers does."""
  tok = stage_io.load_tokenizer(tokenizer_lib.train_tokenizer(
      texts, 320, os.path.join(path, "bpe", "tokenizer.json")))
  tok.chat_template = CHAT_TEMPLATE
  return tok


def write_hf_model(block: ml_collections.ConfigDict, path: str, tok, seed: int) -> str:
  cfg = toy_config(block, len(tok))
  family = "qwen3" if cfg.qk_norm else "qwen2" if cfg.qkv_bias else "llama"
  hf_io.save_hf(transformer.Transformer(cfg, rngs=nnx.Rngs(seed)), path, family=family,
                extra_config={"eos_token_id": tok.eos_token_id,
                              "pad_token_id": tok.pad_token_id})
  tok.save_pretrained(path)
  return path


def write_data(config: ml_collections.ConfigDict, path: str, examples: dict) -> str:
  """The preset's JSONL files (names as builders.*.SPLIT_FILES) from synthetic problems."""
  os.makedirs(path, exist_ok=True)
  files = ({"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"}
           if config.data.name == "gsm8k" else
           {"train": "math_train.jsonl", "test": "math500_test.jsonl"})
  for split, name in files.items():
    with open(os.path.join(path, name), "w") as f:
      for i, e in enumerate(examples[split]):
        if config.data.name == "gsm8k":
          row = {"question": e["question"],
                 "answer": f"{e['solution'].split('The answer is')[0]}\n#### {e['answer']}"}
        else:
          row = {"problem": e["question"], "solution": e["solution"], "answer": e["answer"],
                 "subject": e["kind"], "level": f"Level {e['level']}",
                 "unique_id": f"{split}/{i}.json"}
        f.write(json.dumps(row) + "\n")
  return path


def scaled_mesh(shape, devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) on `devices`: each axis the preset uses kept (> 1), smaller."""
  data, fsdp, tensor = shape
  tensor = 2 if tensor > 1 else 1
  fsdp = min(fsdp, devices // tensor // (2 if data > 1 else 1))
  return devices // (fsdp * tensor), fsdp, tensor


def stage_blocks(config: ml_collections.ConfigDict) -> list[str]:
  """Top-level blocks that describe a stage (steps and batch_size)."""
  return [k for k, v in config.items()
          if isinstance(v, ml_collections.ConfigDict) and "steps" in v and "batch_size" in v]


def overrides(config: ml_collections.ConfigDict, paths: dict, steps: int, devices: int,
              vocab: int, quick: bool) -> dict:
  """{dotted config field: value} that turn the pod preset into its toy rehearsal."""
  mesh = scaled_mesh(config.parallel.mesh_shape, devices)
  # The fewest prompts whose every sampling call splits over the batch axes.
  batch = mesh[0] * mesh[1] * config.sampling.chunks
  out = {"num_seeds": 1, "data.manual_dir": paths["data"], "data.max_prompt_len": PROMPT_TOKENS,
         "sampling.max_new_tokens": NEW_TOKENS, "parallel.num_devices": devices,
         "parallel.mesh_shape": mesh,
         "train.grad_accum_steps": min(config.train.grad_accum_steps, 2),
         "eval.max_examples": batch, "eval.batch_size": batch,
         "eval.num_samples": min(config.eval.num_samples, 4),
         "reward.rm_batch_rows": min(config.reward.rm_batch_rows, 4)}
  if config.eval.get("every", 0):
    out["eval.every"] = 1
  for name in stage_blocks(config):
    block = config[name]
    if block.steps:
      out[f"{name}.steps"] = steps
    out[f"{name}.batch_size"] = batch
    if "num_samples" in block:
      out[f"{name}.num_samples"] = min(block.num_samples, 4)
  if "num_samples" in config.sampling:
    out["sampling.num_samples"] = min(config.sampling.num_samples, 4)
  for block_name in ("model", "teacher_model", "student_model"):
    if block_name not in config:
      continue
    toy = toy_config(config[block_name], vocab)
    block = config[block_name]
    for field in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                  "head_dim", "vocab_size"):
      if field in block:
        out[f"{block_name}.{field}"] = getattr(toy, field)
    if block.get("attention_chunk", 0):
      out[f"{block_name}.attention_chunk"] = 64
    if block.get("logits_chunk", 0):
      out[f"{block_name}.logits_chunk"] = 8
  for field, key in (("init_from", "policy"), ("teacher_init_from", "teacher"),
                     ("student_init_from", "student")):
    if config.get(field):
      out[field] = paths[key]
  if config.tokenizer.get("path"):
    out["tokenizer.path"] = paths["student" if "student" in paths else "policy"]
  if config.reward.get("rm_from"):
    out["reward.rm_from"] = paths["reward model"]
  if quick and "hero" in config:
    out.update({"hero.regimes": config.hero.regimes.split(",")[0], "hero.methods": "hero",
                "hero.ablations": False})
  return out


def flag_value(value) -> str:
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(str(v) for v in value) + ",)"
  return str(value)


def prepare(config: ml_collections.ConfigDict, root: str, devices: int, steps: int,
            quick: bool) -> dict:
  """Writes the models, tokenizer and data; returns the overrides."""
  problems = {split: pipeline.load_examples(
      "synthetic_math", split, os.path.join(root, "synthetic"), seed=0, num_train=2000,
      num_validation=16, num_test=16) for split in ("train", "test")}
  tok = write_tokenizer(os.path.join(root, "tokenizer"),
                        [e["question"] + " " + e["solution"] for e in problems["train"]])
  paths = {"data": write_data(config, os.path.join(root, "data"), problems)}
  models = {"policy": "model", "teacher": "teacher_model", "student": "student_model"}
  for seed, (key, block) in enumerate(models.items()):
    field = {"policy": "init_from", "teacher": "teacher_init_from",
             "student": "student_init_from"}[key]
    if config.get(field) and block in config:
      paths[key] = write_hf_model(config[block], os.path.join(root, "hf", key), tok, seed)
  if config.reward.get("rm_from"):
    rm_block = next((m[0] for plan in config.get("plans", {}).values()
                     for m in plan.models.values() if not isinstance(m[0], str)
                     and m[0].get("num_labels")), None)
    if rm_block is None:
      raise errors.ConfigError("reward.rm_from is set but no plan names a reward model block")
    paths["reward model"] = write_hf_model(rm_block, os.path.join(root, "hf", "reward_model"),
                                           tok, 7)
  return overrides(config, paths, steps, devices, len(tok), quick)


def run_processes(module: str, config_arg: str, flags_list: list[str], workdir: str,
                  processes: int, devices: int, timeout: int) -> list[dict]:
  """The experiment in `processes` processes; [{process, returncode, log}]."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env["PYTHONPATH"] = os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")])
  os.makedirs(workdir, exist_ok=True)
  procs, logs = [], []
  for i in range(processes):
    log = os.path.join(os.path.dirname(workdir), f"process{i}.log")
    logs.append(log)
    cmd = [sys.executable, "-m", module, f"--config={config_arg}", *flags_list,
           f"--workdir={workdir}", f"--config.distributed.coordinator_address={address}",
           f"--config.distributed.num_processes={processes}",
           f"--config.distributed.process_id={i}"]
    with open(log, "w") as f:
      procs.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT))
  deadline = time.time() + timeout
  results = []
  for i, p in enumerate(procs):
    try:
      p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      p.wait()
    results.append({"process": i, "returncode": p.returncode, "log": logs[i]})
  if any(r["returncode"] for r in results):  # one failed: the others wait on it forever
    for q in procs:
      if q.poll() is None:
        q.kill()
  return results


def finished_stages(workdir: str) -> list[str]:
  """Stage directories (relative) with a summary.json or eval.json."""
  out = []
  for dirpath, _, files in os.walk(workdir):
    if "summary.json" in files or "eval.json" in files:
      out.append(os.path.relpath(dirpath, workdir))
  return sorted(out)


def main(argv):
  del argv
  config = _CONFIG.value
  if config.get("stage") not in SCRIPTS or "plans" not in config:
    raise errors.ConfigError(f"--config names no pod preset (config.stage={config.get('stage')!r} "
                             f"with a `plans` block; pod presets: {', '.join(SCRIPTS)} :pod)")
  root = os.path.abspath(_WORKDIR.value)
  devices = _PROCESSES.value * _DEVICES.value
  os.makedirs(root, exist_ok=True)
  changed = prepare(config, os.path.join(root, "inputs"), devices, _STEPS.value, _QUICK.value)
  config_arg = flags.FLAGS["config"].config_filename
  # The command's own --config.* overrides reach the preset too (the toy sizes win).
  own = [a for a in sys.argv[1:] if a.startswith("--config.")
         and a[len("--config."):].split("=")[0] not in changed]
  flags_list = own + [f"--config.{k}={flag_value(v)}" for k, v in changed.items()]
  module = SCRIPTS[config.stage]
  print(f"rehearsing {config_arg} with {module} in {_PROCESSES.value} processes x "
        f"{_DEVICES.value} CPU devices, mesh {changed['parallel.mesh_shape']}", flush=True)
  t0 = time.time()
  results = run_processes(module, config_arg, flags_list, os.path.join(root, "run"),
                          _PROCESSES.value, _DEVICES.value, _TIMEOUT.value)
  stages = finished_stages(os.path.join(root, "run"))
  report = {"config": config_arg, "module": module, "processes": _PROCESSES.value,
            "devices_per_process": _DEVICES.value, "overrides": changed,
            "command": shlex.join(["python", "-m", module, f"--config={config_arg}",
                                   *flags_list]),
            "results": results, "finished_stages": stages,
            "seconds": round(time.time() - t0, 1)}
  with open(os.path.join(root, "rehearsal.json"), "w") as f:
    json.dump(report, f, indent=2, default=str)
  for r in results:
    print(f"process {r['process']}: exit {r['returncode']} (log {r['log']})")
  print(f"finished stages ({len(stages)}): {', '.join(stages)}; {report['seconds']} s")
  failed = [r for r in results if r["returncode"]]
  if failed:
    with open(failed[0]["log"]) as f:
      tail = f.read()[-3000:]
    sys.exit(f"FATAL the rehearsal of {config_arg} failed in process {failed[0]['process']}:\n"
             f"{tail}")


if __name__ == "__main__":
  # Flags only when run as a script: the tests import this module.
  _CONFIG = cli.define_config("configs/hero.py:pod")
  _WORKDIR = flags.DEFINE_string("workdir", "/tmp/rehearse_pod", "Output directory.")
  _PROCESSES = flags.DEFINE_integer("processes", 2, "Processes (jax.distributed over gloo).")
  _DEVICES = flags.DEFINE_integer("devices", 4, "Forced CPU devices per process.")
  _STEPS = flags.DEFINE_integer("steps", 2, "Steps of every stage the preset trains.")
  _QUICK = flags.DEFINE_bool("quick", False, "HERO: one regime and method, no ablations.")
  _TIMEOUT = flags.DEFINE_integer("timeout_s", 3600, "Limit for the whole run.")
  cli.run(main)
