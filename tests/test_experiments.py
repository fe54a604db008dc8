"""Experiment scripts on micro presets: their tables and plots are written and well-formed."""
import csv
import json
import os

import matplotlib.image

from hybrid_rl.train.metrics import read_metrics as metrics_rows
from tests.helpers import run_module

COMMON = ["--config.log.progress=False", "--config.log.tensorboard=False",
          "--config.verifier.num_workers=1"]


def test_reinforce_ada_micro_writes_table_with_cost_columns_and_curves(tmp_path):
  workdir = str(tmp_path / "ada")
  proc = run_module("experiments.reinforce_ada", f"--workdir={workdir}",
                    "--config=configs/reinforce_ada.py:micro", *COMMON)
  assert "Reinforce-Ada vs GRPO" in proc.stdout
  rows = list(csv.DictReader(open(os.path.join(workdir, "tables", "reinforce_ada.csv"))))
  assert [r["method"] for r in rows] == ["GRPO (n)", "Reinforce-Ada-Pos", "Reinforce-Ada-Balance"]
  grpo, ada_pos, ada_bal = (float(r["samples/step"]) for r in rows)
  assert grpo == 4 * 2  # prompts x n
  assert ada_pos >= 4 * 4 and ada_bal >= 4 * 4  # at least one round of M per prompt
  for r in rows:
    assert float(r["s/step"]) > 0 and r["paper avg@32"]
  for name in ("reinforce_ada_step.png", "reinforce_ada_samples.png"):
    assert matplotlib.image.imread(os.path.join(workdir, "plots", name)).shape[0] > 100
  assert os.path.exists(os.path.join(workdir, "tables", "reinforce_ada.tex"))


def test_hero_micro_writes_main_and_ablation_tables_and_reuses_arms(tmp_path):
  workdir = str(tmp_path / "hero")
  args = ["experiments.hero", f"--workdir={workdir}", "--config=configs/hero.py:micro", *COMMON]
  proc = run_module(*args)
  assert "HERO: regime x reward method" in proc.stdout and "HERO ablations" in proc.stdout
  main = list(csv.DictReader(open(os.path.join(workdir, "tables", "hero_main.csv"))))
  assert [(r["training regime"], r["method"]) for r in main] == [
      (reg, m) for reg in ("easy-to-verify", "hard-to-verify")
      for m in ("RM-only", "verifier-only", "HERO")]
  assert all(r["easy (paper)"] and r["easy (ours)"] != "-" for r in main)
  ablations = list(csv.DictReader(open(os.path.join(workdir, "tables", "hero_ablations.csv"))))
  by_label = {r["ablation"]: r for r in ablations}
  assert by_label["dense both"]["arm"] == by_label["variance weighting on"]["arm"] == "easy-hero"
  assert by_label["alpha 0.2"]["arm"] == "easy-hero-alpha_0.2"
  # Each arm trained with its own reward: HERO logs its weights, RM-only its RM scores.
  arms = os.path.join(workdir, "seed0", "arms")
  def last_row(arm):
    return metrics_rows(os.path.join(arms, arm, "grpo", "metrics.jsonl"))[-1]
  assert "hero_weight_mean" in last_row("easy-hero")
  assert "hero_weight_mean" not in last_row("easy-hero-no_variance_weighting")
  assert "rm_score_mean" in last_row("easy-rm") and "rm_score_mean" not in last_row("easy-verifier")
  rm = json.load(open(os.path.join(workdir, "tables", "rm.json")))
  assert 0 <= rm[0]["accuracy"] <= 1 and rm[0]["n"] > 0
  # A second start finds every stage finished and re-runs none.
  again = run_module(*args)
  assert "== grpo" not in again.stdout and "== sft" not in again.stdout
  assert open(os.path.join(workdir, "tables", "hero_main.md")).read().count("|") > 40


def test_sparse_to_dense_micro_chains_checkpoints_and_accounts_labels(tmp_path):
  workdir = str(tmp_path / "s2d")
  proc = run_module("experiments.sparse_to_dense", f"--workdir={workdir}",
                    "--config=configs/sparse_to_dense.py:micro", *COMMON)
  assert "Sparse-to-dense: student accuracy" in proc.stdout
  seed = os.path.join(workdir, "seed0")
  def cfg(stage):
    return json.load(open(os.path.join(seed, stage, "config.json")))
  def summary(stage):
    return json.load(open(os.path.join(seed, stage, "summary.json")))
  # Stage chaining: each stage starts from, and distils from, the right checkpoint.
  assert cfg("teacher_grpo")["init_from"] == os.path.join(seed, "teacher_sft")
  fkl, opd = cfg("bridge_rl/fkl"), cfg("bridge_rl/opd")
  assert fkl["init_from"] == os.path.join(seed, "student_sft")
  assert fkl["distill"]["teacher_from"] == os.path.join(seed, "teacher_grpo")
  assert (fkl["distill"]["rollouts"], opd["distill"]["rollouts"]) == ("teacher", "student")
  assert opd["init_from"] == os.path.join(seed, "bridge_rl", "fkl")
  assert cfg("bridge_pre/fkl")["distill"]["teacher_from"] == os.path.join(seed, "teacher_sft")
  assert cfg("opd_only/opd")["init_from"] == os.path.join(seed, "student_sft")
  assert cfg("bridge_rl/stage3")["init_from"] == os.path.join(seed, "bridge_rl", "opd")
  assert cfg("bridge_rl/replay")["init_from"] == os.path.join(seed, "bridge_rl", "opd")
  assert cfg("direct_grpo")["model"] == cfg("student_sft")["model"]
  assert cfg("teacher_grpo")["data"]["train_split"] == cfg("direct_grpo")["data"]["train_split"]
  # Labelled accounting: GRPO stages count steps x prompts, distillation none.
  stage1 = summary("teacher_grpo")
  assert stage1["labelled_prompts"] == 2 * 4
  assert summary("bridge_rl/opd")["labelled_prompts"] == 0
  rows = {r["arm"]: r for r in csv.DictReader(
      open(os.path.join(workdir, "tables", "sparse_to_dense.csv")))}
  recipe = rows["bridge: RL teacher, FKL -> OPD"]
  assert int(recipe["labelled prompts"]) == stage1["labelled_prompts"]
  assert float(recipe["samples"]) == sum(summary(s)["samples_total"] for s in (
      "teacher_grpo", "bridge_rl/fkl", "bridge_rl/opd"))
  stage3 = rows["bridge + Stage 3 student GRPO"]
  assert int(stage3["labelled prompts"]) == 2 * stage1["labelled_prompts"]
  assert int(rows["direct student GRPO (same labelled budget)"]["labelled prompts"]) == 8
  assert int(rows["bridge from the pre-RL teacher"]["labelled prompts"]) == 0
  assert int(rows["bridge + replay control (Stage 3 steps on bridge data)"]["labelled prompts"]) == 8
