r"""The main job on the embedded default: one command, no network.

  python -m experiments.quickstart --workdir=/tmp/hybrid_rl

Builds the synthetic data and tokenizer, cold-starts the tiny student by SFT,
evaluates it, runs GRPO, evaluates again, and writes the table to
<workdir>/tables/ (markdown, CSV, JSON) and learning curves to <workdir>/plots/.
Re-running with the same --workdir reuses every finished stage.
"""
import json
import os

from absl import flags
import ml_collections

from hybrid_rl import cli
from hybrid_rl.eval import plots
from hybrid_rl.train import stage_io
from hybrid_rl.train import stages

_CONFIG = cli.define_config("configs/quickstart.py:default")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/hybrid_rl", "Output directory.")


def stage_config(base: ml_collections.ConfigDict, stage: str, seed: int, init_from: str,
                 block: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.to_dict())
  config.stage, config.seed, config.init_from = stage, seed, init_from
  if block is not None:
    config.train.steps = block.steps
    config.train.batch_size = block.batch_size
    config.optim.learning_rate = block.learning_rate
    config.optim.schedule = block.schedule
    config.optim.warmup_steps = block.warmup_steps
    config.data.train_split = block.split
    if "num_samples" in block:
      config.sampling.num_samples = block.num_samples
  return config


def run_stage(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs a stage unless its workdir already holds its result."""
  done = (os.path.exists(os.path.join(workdir, "eval.json")) if config.stage == "eval"
          else stage_io.is_finished(workdir))
  if done and os.path.exists(os.path.join(workdir, "summary.json")):
    with open(os.path.join(workdir, "summary.json")) as f:
      return json.load(f)
  print(f"== {config.stage} (seed {config.seed}) -> {workdir}", flush=True)
  summary = stages.get(config.stage)(config, workdir)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def main(argv):
  del argv
  config = cli.resolved_config(_CONFIG)
  root = os.path.abspath(_WORKDIR.value)
  cli.prepare_workdir(config, root)
  with config.unlocked():
    config.data.data_dir = config.data.data_dir or os.path.join(root, "data")
  rows, curves = [], {}
  for seed in range(config.num_seeds):
    d = lambda name, seed=seed: os.path.join(root, f"seed{seed}", name)
    run_stage(stage_config(config, "sft", seed, "", config.sft), d("sft"))
    before = run_stage(stage_config(config, "eval", seed, d("sft")), d("eval_sft"))
    run_stage(stage_config(config, "grpo", seed, d("sft"), config.grpo), d("grpo"))
    after = run_stage(stage_config(config, "eval", seed, d("grpo")), d("eval_grpo"))
    curves[f"seed{seed}"] = os.path.join(d("grpo"), "metrics.jsonl")
    rows.append({"seed": seed, "sft_avg@k": before["overall"]["avg@k"],
                 "grpo_avg@k": after["overall"]["avg@k"],
                 "sft_pass@k": before["overall"]["pass@k"],
                 "grpo_pass@k": after["overall"]["pass@k"]})
  os.makedirs(os.path.join(root, "tables"), exist_ok=True)
  k = config.eval.num_samples
  lines = [f"| seed | SFT avg@{k} | GRPO avg@{k} | SFT pass@{k} | GRPO pass@{k} |",
           "|---|---|---|---|---|"]
  lines += [f"| {r['seed']} | {r['sft_avg@k'] * 100:.1f} | {r['grpo_avg@k'] * 100:.1f} | "
            f"{r['sft_pass@k'] * 100:.1f} | {r['grpo_pass@k'] * 100:.1f} |" for r in rows]
  table = "\n".join(lines) + "\n"
  with open(os.path.join(root, "tables", "slice.md"), "w") as f:
    f.write(table)
  with open(os.path.join(root, "tables", "slice.csv"), "w") as f:
    f.write(",".join(rows[0]) + "\n" + "".join(",".join(str(v) for v in r.values()) + "\n"
                                               for r in rows))
  plots.plot_learning_curves(curves, ["reward_mean", "loss"],
                             os.path.join(root, "plots", "grpo_curves.png"))
  print(table, flush=True)


if __name__ == "__main__":
  cli.run(main)
