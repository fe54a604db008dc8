r"""GRPO (n) vs Ada-Pos vs Ada-Balance vs GRPO + dynamic sampling, over seeds, with cost
columns and learning curves.

  python -m experiments.reinforce_ada --config=configs/reinforce_ada.py:tiny --workdir=/tmp/ada

Per seed: one SFT cold start shared by all arms; per arm: GRPO with
rl.sampling = fixed (G = n) / ada_pos / ada_balance / dynamic (DAPO's filter of
groups without signal, G = n, at most rl.dynamic.max_batches batches a step), then
evaluation on the test split. Finished stages are reused when the script is started again.
Writes <workdir>/tables/reinforce_ada.{md,csv,tex} and
<workdir>/plots/reinforce_ada_{step,samples}.png.
"""
import os

from absl import flags
import ml_collections
import numpy as np

from hybrid_rl import cli
from hybrid_rl.eval import learning_speed as speed
from hybrid_rl.eval import plots
from hybrid_rl.eval import tables
from hybrid_rl.parallel import distributed
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_runs


ARM_NAMES = {"grpo": "GRPO (n)", "ada_pos": "Reinforce-Ada-Pos",
             "ada_balance": "Reinforce-Ada-Balance", "dynamic": "GRPO + dynamic sampling"}
PAPER = {  # Qwen2.5-Math-1.5B: weighted avg@32, seconds per step on 8xH100
    "grpo": ("45.3", "102"), "ada_pos": ("46.1", "228"), "ada_balance": ("47.6", "290"),
    "dynamic": ("-", "-")}  # the paper has no dynamic-sampling arm


def run_seed(config: ml_collections.ConfigDict, root: str, seed: int,
             start: str | None = None) -> dict:
  """Runs every arm of one seed; `start` is a finished policy to begin from (else the
  SFT cold start of config.sft, or config.init_from)."""
  c = stage_runs.Chain(config, root, seed)
  start = c.cold_start(start)
  out = {}
  for arm in config.arms.split(","):
    overrides = {"stage": "grpo", "init_from": start, **stage_runs.block_overrides(config.grpo),
                 "rl.sampling": "fixed" if arm == "grpo" else arm}
    if arm in ("grpo", "dynamic"):  # groups of n, as Reinforce-Ada keeps
      overrides["sampling.num_samples"] = config.rl.ada.n
    policy = c.run(os.path.join(arm, "grpo"), overrides)
    metrics_path = os.path.join(policy, "metrics.jsonl")
    out[arm] = {"eval": c.evaluate(os.path.join(arm, "eval"), policy),
                "metrics": metrics_lib.read_metrics(metrics_path), "metrics_path": metrics_path}
  return out


def main(argv):
  del argv
  run_all = lambda config, root: [run_seed(config, root, seed)
                                  for seed in range(config.num_seeds)]
  config, root, _ = cli.experiment_setup(_CONFIG, _WORKDIR.value, plan=run_all)
  per_seed = run_all(config, root)
  if distributed.is_main():
    print(write_outputs(config, per_seed, root), flush=True)


def write_outputs(config: ml_collections.ConfigDict, per_seed: list[dict], root: str,
                  stem: str = "reinforce_ada") -> str:
  """The table (<root>/tables/<stem>.*) and learning curves; returns the markdown."""
  arms = config.arms.split(",")
  k = config.eval.num_samples
  rows = []
  for arm in arms:
    runs = [s[arm] for s in per_seed]
    def step_mean(key):
      # The first step pays for compilation; leave it out of per-step costs when possible.
      return np.mean([np.mean([r[key] for r in run["metrics"][1:] or run["metrics"] if key in r])
                      for run in runs])
    rows.append({
        "method": ARM_NAMES[arm],
        f"avg@{k} (test)": tables.fmt(*tables.mean_ci95([r["eval"]["overall"]["avg@k"] for r in runs])),
        "samples/step": f"{step_mean('samples'):.0f}",
        "tokens/step": f"{step_mean('tokens_generated'):.0f}",
        "s/step": f"{step_mean('seconds_rollout_and_update'):.2f}",
        "zero-adv prompts": f"{step_mean('zero_adv_fraction') * 100:.0f}%",
        "paper avg@32": PAPER[arm][0], "paper s/step": PAPER[arm][1]})
  s_step = {a: float(r["s/step"]) for a, r in zip(arms, rows)}
  ratio = (f"Ada-Balance / GRPO seconds per step: {s_step['ada_balance'] / s_step['grpo']:.2f}x "
           "(paper: 2.84x)" if {"grpo", "ada_balance"} <= set(arms) else "")
  notes = [f"Setup: {config.data.name}, model {config.model.hidden_size}d x {config.model.num_layers} "
           f"layers; SFT {config.sft.steps} steps; GRPO {config.grpo.steps} steps x "
           f"{config.grpo.batch_size} prompts, n={config.rl.ada.n}, M={config.rl.ada.round_size}, "
           f"N={config.rl.ada.max_rounds}; rl.std_mode={config.rl.std_mode} in every arm, GRPO (n) "
           f"included; {config.num_seeds} seed(s), mean ± 95% CI." + (
               f" Dynamic sampling: batches of {config.grpo.batch_size} prompts x n until "
               f"every group has signal, at most {config.rl.dynamic.max_batches} a step."
               if "dynamic" in arms else ""),
           "Paper columns: Xiong et al. 2025, Qwen2.5-Math-1.5B (weighted avg@32; 8xH100 s/step).",
           ratio]
  out = tables.write_table(rows, list(rows[0]), os.path.join(root, "tables", stem),
                           title="Reinforce-Ada vs GRPO", notes=[n for n in notes if n])
  curves = seed_mean_curves(per_seed, arms)
  for x in ("step", "samples_total"):
    plots.plot_learning_curves({ARM_NAMES[a]: c for a, c in curves.items()},
                               ["reward_mean", speed.EVAL_KEY], os.path.join(
        root, "plots", f"{stem}_{'step' if x == 'step' else 'samples'}.png"), x_key=x,
                               title=f"mean over {len(per_seed)} seed(s)")
  figures = speed_figures(per_seed, curves)
  if not figures:
    return out["md"]
  return out["md"] + "\n\n" + speed_table(config, figures, len(per_seed), root, stem)


CURVE_KEYS = ("reward_mean", speed.EVAL_KEY, "samples_total", "tokens_total", "seconds_total")


def seed_mean_curves(per_seed: list[dict], arms: list[str]) -> dict[str, list[dict]]:
  """arm -> its RL stage's metric rows averaged over seeds (learning_speed.mean_curve)."""
  return {arm: speed.mean_curve([speed.with_totals(s[arm]["metrics"]) for s in per_seed],
                                CURVE_KEYS) for arm in arms}


def learning_speed(per_seed: list[dict], arms: list[str]) -> dict:
  """Reinforce-Ada's second claim, on validation: {arm: {"final_val": per-seed final
  validation accuracy (0-1), "target": GRPO (n)'s seed-mean final, "step", "samples",
  "tokens", "seconds": where the arm's seed-mean curve first reaches the target
  (None: not reached)}}; {} without a GRPO arm or validation curves."""
  return speed_figures(per_seed, seed_mean_curves(per_seed, arms))


def speed_figures(per_seed: list[dict], curves: dict[str, list[dict]]) -> dict:
  """learning_speed from the arms' seed-mean curves (seed_mean_curves)."""
  if "grpo" not in curves or not any(speed.EVAL_KEY in r for r in curves["grpo"]):
    return {}
  target = speed.final_value(curves["grpo"])
  out = {}
  for arm, curve in curves.items():
    hit = speed.first_reach(curve, target) or {}
    out[arm] = {"final_val": [round(speed.final_value(s[arm]["metrics"]), 4) for s in per_seed],
                "target": round(target, 4), **{
                    name: hit.get(key) for name, key in (
                        ("step", "step"), ("samples", "samples_total"),
                        ("tokens", "tokens_total"), ("seconds", "seconds_total"))}}
  return out


def speed_table(config: ml_collections.ConfigDict, figures: dict, num_seeds: int, root: str,
                stem: str) -> str:
  """The learning-speed figures as a table (<root>/tables/<stem>_speed.*)."""
  k = config.eval.num_samples
  rows = []
  for arm, f in figures.items():
    cost = lambda name: "not reached" if f[name] is None else f"{f[name]:.0f}"
    rows.append({"method": ARM_NAMES[arm],
                 f"final val avg@{k}": tables.fmt(*tables.mean_ci95(f["final_val"])),
                 "steps to GRPO's final": cost("step"), "samples to it": cost("samples"),
                 "tokens to it": cost("tokens"), "seconds to it": cost("seconds")})
  target = next(iter(figures.values()))["target"]
  notes = [f"Validation avg@{k} ({config.eval.max_examples} problems at most) every "
           f"{config.eval.every} steps, averaged over {num_seeds} seed(s) step by step; "
           f"GRPO (n)'s final mean, {100 * target:.1f}, is the target. Samples, tokens and "
           "seconds (rollout + update, compilation included) are cumulative at the first "
           "evaluation that reaches it."]
  return tables.write_table(rows, list(rows[0]), os.path.join(root, "tables", f"{stem}_speed"),
                            title="Reinforce-Ada: learning speed", notes=notes)["md"]


if __name__ == "__main__":
  # Flags only when run as a script: experiments.quickstart imports this module.
  _CONFIG = cli.define_config("configs/reinforce_ada.py:tiny")
  _WORKDIR = flags.DEFINE_string("workdir", "/tmp/reinforce_ada", "Output directory.")
  cli.run(main)
