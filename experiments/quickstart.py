r"""The main job on the embedded default: one command, no network.

  python -m experiments.quickstart --workdir=/tmp/hybrid_rl

Builds the synthetic data and tokenizer, cold-starts the tiny student by SFT,
evaluates it, runs GRPO, evaluates again, and writes the table to
<workdir>/tables/ (markdown, CSV, LaTeX) and learning curves to <workdir>/plots/.
Re-running with the same --workdir reuses every finished stage.
"""
import os

from absl import flags
import ml_collections

from hybrid_rl import cli
from hybrid_rl.eval import plots
from hybrid_rl.eval import tables
from hybrid_rl.train import stage_runs

_CONFIG = cli.define_config("configs/quickstart.py:default")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/hybrid_rl", "Output directory.")


def stage_config(base: ml_collections.ConfigDict, stage: str, seed: int, init_from: str,
                 block: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  overrides = {"stage": stage, "seed": seed, "init_from": init_from}
  if block is not None:
    overrides.update(stage_runs.block_overrides(block))
  return stage_runs.derive(base, overrides)


def main(argv):
  del argv
  config, root = cli.experiment_setup(_CONFIG, _WORKDIR.value)
  results, curves = {"sft": [], "grpo": []}, {}
  for seed in range(config.num_seeds):
    d = lambda name, seed=seed: os.path.join(root, f"seed{seed}", name)
    stage_runs.run_stage(stage_config(config, "sft", seed, "", config.sft), d("sft"))
    results["sft"].append(
        stage_runs.run_stage(stage_config(config, "eval", seed, d("sft")), d("eval_sft")))
    stage_runs.run_stage(stage_config(config, "grpo", seed, d("sft"), config.grpo), d("grpo"))
    results["grpo"].append(
        stage_runs.run_stage(stage_config(config, "eval", seed, d("grpo")), d("eval_grpo")))
    curves[f"seed{seed}"] = os.path.join(d("grpo"), "metrics.jsonl")
  table = slice_table(results, config, os.path.join(root, "tables", "slice"))
  plots.plot_learning_curves(curves, ["reward_mean", "loss"],
                             os.path.join(root, "plots", "grpo_curves.png"))
  print(table, flush=True)


def slice_table(results: dict, config: ml_collections.ConfigDict, stem: str) -> str:
  """SFT vs GRPO oracle accuracy on the eval split, mean +- 95% CI over seeds."""
  k = config.eval.num_samples
  def cell(evals, key="avg@k", family=None):
    vals = [(e["family"][family] if family else e["overall"])[key] for e in evals]
    return tables.fmt(*tables.mean_ci95(vals))
  rows = []
  for arm, name in (("sft", "SFT cold start"), ("grpo", "SFT + GRPO")):
    ev = results[arm]
    rows.append({"arm": name, f"avg@{k}": cell(ev), f"avg@{k} easy": cell(ev, family="easy"),
                 f"avg@{k} hard": cell(ev, family="hard"), f"pass@{k}": cell(ev, "pass@k")})
  diff = [g["overall"]["avg@k"] - s["overall"]["avg@k"]
          for s, g in zip(results["sft"], results["grpo"])]
  rows.append({"arm": "GRPO - SFT (paired)", f"avg@{k}": tables.fmt(*tables.mean_ci95(diff))})
  notes = [f"Oracle (equivalence verifier) accuracy on synthetic_math/{config.eval.split} "
           f"({results['sft'][0]['overall']['n']} problems, {k} samples each, T={config.eval.temperature}), "
           f"mean ± 95% CI over {len(diff)} seed(s).",
           f"SFT: {config.sft.steps} steps x {config.sft.batch_size} on {config.sft.split}; "
           f"GRPO: {config.grpo.steps} steps x {config.grpo.batch_size} prompts x "
           f"{config.grpo.num_samples} samples on {config.grpo.split}, lr {config.grpo.learning_rate}."]
  return tables.write_table(rows, ["arm", f"avg@{k}", f"avg@{k} easy", f"avg@{k} hard",
                                   f"pass@{k}"], stem, title="SFT -> GRPO slice",
                            notes=notes)["md"]


if __name__ == "__main__":
  cli.run(main)
