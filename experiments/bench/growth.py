r"""How the cost of one GRPO step grows with prompts per step and response length.

  python -m experiments.bench.growth --workdir=/tmp/growth
  python -m experiments.bench.growth --workdir=/tmp/growth --prompts=8,32,128 --tokens=64,128,256

The quickstart's tiny model (configs/default.py:tiny, the `grpo` stage as the
quickstart runs it: 8 samples per prompt, micro-batches of 8 rows) from random
weights, so that responses run to max_new_tokens and every setting does its whole
work. One sweep varies prompts per step at --base_tokens, the other the response
length at --base_prompts. Each setting runs --steps steps; the figures are medians
over the steps after the first (which compiles): seconds sampling / verifying /
training / the whole step, and the step's seconds per 1000 generated tokens, which
stays flat where the cost grows linearly.
"""
import json
import os
import statistics

from absl import app
from absl import flags
from absl import logging

from configs import default
from hybrid_rl.eval import throughput
from hybrid_rl.train import stages

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
_PROMPTS = flags.DEFINE_list("prompts", ["8", "32", "128"], "Prompts per step to sweep.")
_TOKENS = flags.DEFINE_list("tokens", ["64", "128", "256"], "Response lengths to sweep.")
_BASE_PROMPTS = flags.DEFINE_integer("base_prompts", 32, "Prompts per step in the length sweep.")
_BASE_TOKENS = flags.DEFINE_integer("base_tokens", 128, "Response length in the prompt sweep.")
_STEPS = flags.DEFINE_integer("steps", 3, "GRPO steps per setting (the first is not counted).")

PHASES = ("seconds_sampling", "seconds_verifying", "seconds_training",
          "seconds_rollout_and_update")


def run_setting(workdir: str, prompts: int, tokens: int, steps: int) -> dict:
  """Median phase seconds of the grpo stage at this size (its metrics.jsonl)."""
  config = default.get_config("tiny")
  config.stage = "grpo"
  config.data.data_dir = os.path.join(os.path.dirname(workdir), "data")
  config.train.update(steps=steps, batch_size=prompts, checkpoint_every=steps, log_every=1)
  config.sampling.max_new_tokens = tokens
  config.log.update(progress=False, tensorboard=False)
  if not os.path.exists(os.path.join(workdir, "final", "model.json")):
    stages.get("grpo")(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f][1:]
  out = {k: statistics.median(r[k] for r in rows) for k in PHASES + ("tokens_generated",)}
  out["seconds_per_1k_tokens"] = out["seconds_rollout_and_update"] / out["tokens_generated"] * 1e3
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint operation at INFO
  root = os.path.abspath(_WORKDIR.value)
  peak = throughput.measure_matmul_peak()
  settings = [(int(p), _BASE_TOKENS.value) for p in _PROMPTS.value]
  settings += [(_BASE_PROMPTS.value, int(t)) for t in _TOKENS.value
               if (_BASE_PROMPTS.value, int(t)) not in settings]
  print(f"GRPO step of the tiny model (random weights), 8 samples per prompt; measured "
        f"float32 matmul peak {peak / 1e9:.1f} GFLOP/s; medians of steps 2-{_STEPS.value}")
  print("| prompts | max new tokens | tokens generated | s sampling | s verifying | s training "
        "| s/step | s per 1k tokens |")
  print("|---|---|---|---|---|---|---|---|")
  results = []
  for prompts, tokens in settings:
    r = run_setting(os.path.join(root, f"p{prompts}_t{tokens}"), prompts, tokens, _STEPS.value)
    results.append({"prompts": prompts, "max_new_tokens": tokens, **r})
    print(f"| {prompts} | {tokens} | {r['tokens_generated']:.0f} | {r['seconds_sampling']:.2f} | "
          f"{r['seconds_verifying']:.2f} | {r['seconds_training']:.2f} | "
          f"{r['seconds_rollout_and_update']:.2f} | {r['seconds_per_1k_tokens']:.3f} |", flush=True)
  with open(os.path.join(root, "bench_growth.json"), "w") as f:
    json.dump({"peak_gflops": peak / 1e9, "results": results}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
