r"""Sparse-to-dense pipeline and its controls, over seeds.

  python -m experiments.sparse_to_dense --config=configs/sparse_to_dense.py:tiny --workdir=/tmp/s2d

Per seed, stages chained by checkpoint (each reused once finished, across arms
and restarts):
  teacher_sft, student_sft   cold starts (or teacher_init_from / student_init_from)
  teacher_grpo               Stage 1: GRPO on the teacher, the labelled budget
  fkl                        Stage 2a: student fits teacher rollouts (forward KL)
  opd                        Stage 2b: on-policy distillation on student rollouts
  student_grpo               Stage 3: student GRPO on held-out labelled prompts
Arms (config.arms):
  recipe         RL teacher -> FKL -> OPD
  stage3         recipe, then Stage 3
  replay         recipe, then the Stage 3 control: the same number of student
                 steps (same prompts x samples per step) spent on more
                 on-policy distillation over the bridge's unlabelled prompts
                 instead of sparse RL (the paper does not define its control;
                 this is ours)
  direct_grpo    student GRPO from its cold start with Stage 1's labelled budget
  pre_rl_bridge  FKL -> OPD from the teacher before Stage 1
  fkl_only       RL teacher -> FKL (the recipe's first half)
  opd_only       RL teacher -> OPD from the student's cold start
Every arm records the labelled prompts and the samples of its whole chain
(cold starts are shared by all arms and listed apart). Writes
<workdir>/tables/sparse_to_dense.{md,csv,tex} and learning curves
<workdir>/plots/sparse_to_dense_{rl,fkl,opd}.png.
"""
import os

from absl import flags
import ml_collections

from hybrid_rl import cli
from hybrid_rl.eval import plots
from hybrid_rl.eval import tables
from hybrid_rl.parallel import distributed
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_runs


ARM_NAMES = {
    "start": "student cold start (no RL, no bridge)",
    "recipe": "bridge: RL teacher, FKL -> OPD",
    "stage3": "bridge + Stage 3 student GRPO",
    "replay": "bridge + replay control (Stage 3 steps on bridge data)",
    "direct_grpo": "direct student GRPO (same labelled budget)",
    "pre_rl_bridge": "bridge from the pre-RL teacher",
    "fkl_only": "FKL warmup only (RL teacher)",
    "opd_only": "OPD only (RL teacher)",
}
# Xu, Sang et al. 2026, Qwen3-8B -> Qwen3-1.7B, MATH accuracy and the differences the
# abstract states.
PAPER = {"recipe": "79.3", "direct_grpo": "75.9", "pre_rl_bridge": "recipe - 7.8",
         "fkl_only": "recipe - 3.3 (no OPD)", "opd_only": "recipe - 1.7 (no FKL warmup)",
         "stage3": "78.5 (75.4 before)", "replay": "Stage 3 - 2.8"}


# Learning curves: plot name -> (metric, stages that log it).
CURVES = {
    "rl": (("reward_mean", "eval/avg@k"), ("teacher_grpo", "direct_grpo", "bridge_rl/stage3")),
    "fkl": (("loss",), ("bridge_rl/fkl", "bridge_pre/fkl")),  # cross-entropy on teacher samples
    "opd": (("reverse_kl",), ("bridge_rl/opd", "bridge_pre/opd", "opd_only/opd",
                              "bridge_rl/replay")),
}


def grpo_overrides(block: ml_collections.ConfigDict, init_from: str, model) -> dict:
  return {"stage": "grpo", "init_from": init_from, "model": model,
          **stage_runs.block_overrides(block)}


def distill_overrides(block: ml_collections.ConfigDict, init_from: str, teacher: str,
                      rollouts: str, model) -> dict:
  return {"stage": "distill", "init_from": init_from, "model": model,
          "distill.teacher_from": teacher, "distill.rollouts": rollouts,
          "distill.kind": block.kind, "distill.top_k": block.get("top_k", 8),
          "distill.jsd_beta": block.get("jsd_beta", 0.5),
          "distill.opd_clip_epsilon": block.get("opd_clip_epsilon", 0.0),
          **stage_runs.block_overrides(block)}


def run_seed(config: ml_collections.ConfigDict, root: str, seed: int) -> dict:
  c = stage_runs.Chain(config, root, seed)
  tm, sm = config.teacher_model, config.student_model
  arms = set(config.arms.split(","))
  teacher0, student0 = config.teacher_init_from, config.student_init_from
  if not teacher0:
    teacher0 = c.run("teacher_sft", {"stage": "sft", "init_from": "", "model": tm,
                                      **stage_runs.block_overrides(config.teacher_sft)})
  if not student0:
    student0 = c.run("student_sft", {"stage": "sft", "init_from": "", "model": sm,
                                     **stage_runs.block_overrides(config.student_sft)})
  teacher_rl = c.run("teacher_grpo", grpo_overrides(config.teacher_grpo, teacher0, tm))
  chains = {"start": []}  # arm -> stage dirs after the cold starts; the last one is evaluated

  def bridge(prefix: str, teacher: str, fkl: bool = True, opd: bool = True) -> list[str]:
    dirs, start = [], student0
    if fkl:
      start = c.run(f"{prefix}/fkl", distill_overrides(config.fkl, start, teacher, "teacher", sm))
      dirs.append(f"{prefix}/fkl")
    if opd:
      start = c.run(f"{prefix}/opd", distill_overrides(config.opd, start, teacher, "student", sm))
      dirs.append(f"{prefix}/opd")
    return dirs

  rl_chain = ["teacher_grpo"]
  if arms & {"recipe", "stage3", "replay"}:
    chains["recipe"] = rl_chain + bridge("bridge_rl", teacher_rl)
  if "stage3" in arms:
    c.run("bridge_rl/stage3", grpo_overrides(config.student_grpo, c.dir("bridge_rl/opd"), sm))
    chains["stage3"] = chains["recipe"] + ["bridge_rl/stage3"]
  if "replay" in arms:
    replay = config.opd.copy_and_resolve_references()
    replay.update(steps=config.student_grpo.steps, batch_size=config.student_grpo.batch_size,
                  num_samples=config.student_grpo.num_samples)
    c.run("bridge_rl/replay", distill_overrides(replay, c.dir("bridge_rl/opd"), teacher_rl,
                                                "student", sm))
    chains["replay"] = chains["recipe"] + ["bridge_rl/replay"]
  if "direct_grpo" in arms:
    c.run("direct_grpo", grpo_overrides(config.teacher_grpo, student0, sm))
    chains["direct_grpo"] = ["direct_grpo"]
  if "pre_rl_bridge" in arms:
    chains["pre_rl_bridge"] = bridge("bridge_pre", teacher0)
  if "fkl_only" in arms:
    chains["fkl_only"] = rl_chain + bridge("bridge_rl", teacher_rl, opd=False)  # shared FKL
  if "opd_only" in arms:
    chains["opd_only"] = rl_chain + bridge("opd_only", teacher_rl, fkl=False)

  evaluate = lambda name, model_dir, model: c.evaluate(os.path.join("eval", name), model_dir, model)
  out = {"teacher_before": evaluate("teacher_start", teacher0, tm),
         "teacher_after": evaluate("teacher_grpo", teacher_rl, tm), "arms": {}}
  for arm, chain in chains.items():
    final = c.dir(chain[-1]) if chain and chain[-1] != "teacher_grpo" else student0
    out["arms"][arm] = {
        "eval": evaluate(arm, final, sm),
        "labelled_prompts": sum(c.summaries[s].get("labelled_prompts", 0) for s in chain),
        "samples": sum(c.summaries[s].get("samples_total", 0) for s in chain),
        "wall_seconds": sum(c.summaries[s].get("wall_seconds", 0) for s in chain)}
  out["cold_start"] = {name: c.summaries[name] for name in ("teacher_sft", "student_sft")
                       if name in c.summaries}
  out["metrics_paths"] = {name: os.path.join(c.dir(name), "metrics.jsonl") for name in c.summaries
                          if not name.startswith("eval")}
  return out


def table(config: ml_collections.ConfigDict, per_seed: list[dict], stem: str) -> str:
  k = config.eval.num_samples
  acc = lambda evals: tables.fmt(*tables.mean_ci95([e["overall"]["avg@k"] for e in evals]))
  rows = []
  for arm in ["start"] + [a for a in config.arms.split(",") if a != "start"]:
    runs = [s["arms"][arm] for s in per_seed]
    rows.append({"arm": ARM_NAMES[arm], f"student avg@{k} (test)": acc([r["eval"] for r in runs]),
                 "labelled prompts": f"{runs[0]['labelled_prompts']:.0f}",
                 "samples": f"{sum(r['samples'] for r in runs) / len(runs):.0f}",
                 "wall s": f"{sum(r['wall_seconds'] for r in runs) / len(runs):.0f}",
                 "paper (MATH)": PAPER.get(arm, "")})
  before = acc([s["teacher_before"] for s in per_seed])
  after = acc([s["teacher_after"] for s in per_seed])
  tm, sm = config.teacher_model, config.student_model
  notes = [
      f"Setup: synthetic_math; teacher {tm.hidden_size}d x {tm.num_layers} layers, student "
      f"{sm.hidden_size}d x {sm.num_layers} layers; Stage 1 {config.teacher_grpo.steps} x "
      f"{config.teacher_grpo.batch_size} prompts x {config.teacher_grpo.num_samples}; FKL "
      f"({config.fkl.kind}) {config.fkl.steps} steps; OPD ({config.opd.kind}) "
      f"{config.opd.steps} steps; Stage 3 {config.student_grpo.steps} steps. Oracle accuracy "
      f"(%) on {config.final_eval_split}, mean ± 95% CI over {len(per_seed)} seed(s).",
      f"Teacher accuracy before Stage 1: {before}; after: {after}.",
      "Labelled prompts and samples add up every stage of the arm's chain after the shared "
      "cold starts (SFT on reference solutions, the same for all arms); wall s likewise.",
      "Paper column: Xu, Sang et al. 2026 (Qwen3-8B -> Qwen3-1.7B, MATH), from the abstract; "
      "compare orderings, not values."]
  return tables.write_table(rows, list(rows[0]), stem, title="Sparse-to-dense: student accuracy",
                            notes=notes)["md"]


def write_plots(per_seed: list[dict], plots_dir: str) -> None:
  """Per-step curves of each stage that ran, one line per stage and seed."""
  for name, (metrics, stages) in CURVES.items():
    runs = {f"{stage} s{i}": metrics_lib.read_metrics(s["metrics_paths"][stage]) for stage in stages
            for i, s in enumerate(per_seed) if stage in s["metrics_paths"]}
    if runs:
      plots.plot_learning_curves(runs, list(metrics),
                                 os.path.join(plots_dir, f"sparse_to_dense_{name}.png"))


def main(argv):
  del argv
  run_all = lambda config, root: [run_seed(config, root, seed)
                                  for seed in range(config.num_seeds)]
  config, root, _ = cli.experiment_setup(_CONFIG, _WORKDIR.value, plan=run_all)
  per_seed = run_all(config, root)
  if distributed.is_main():
    print(table(config, per_seed, os.path.join(root, "tables", "sparse_to_dense")), flush=True)
    write_plots(per_seed, os.path.join(root, "plots"))


if __name__ == "__main__":
  # Flags only when run as a script: experiments.quickstart imports this module.
  _CONFIG = cli.define_config("configs/sparse_to_dense.py:tiny")
  _WORKDIR = flags.DEFINE_string("workdir", "/tmp/sparse_to_dense", "Output directory.")
  cli.run(main)
