"""The README's first command on the micro preset, run once for all recipes: tables and
plots written and well-formed, each recipe's arms wired as specified, stages reused (and
refused when started with other settings)."""
import csv
import json
import glob
import os
import re

import matplotlib.image
import pytest

from hybrid_rl.eval import paired
from hybrid_rl.train.metrics import read_metrics
from tests.helpers import run_module

ARGS = ["--config=configs/quickstart.py:micro", "--config.log.progress=False",
        "--config.log.tensorboard=False", "--config.verifier.num_workers=1"]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("qs") / "run")
  proc = run_module("experiments.quickstart", f"--workdir={workdir}", *ARGS)
  return workdir, proc.stdout


def _csv(workdir, name):
  return list(csv.DictReader(open(os.path.join(workdir, "tables", f"{name}.csv"))))


def test_every_table_and_plot_is_written_and_printed(quickstart):
  workdir, stdout = quickstart
  for title in ("SFT -> GRPO slice", "HERO: regime x reward method", "HERO ablations",
                "Reinforce-Ada vs GRPO", "Sparse-to-dense: student accuracy"):
    assert f"### {title}" in stdout
  for name in ("slice", "hero_main", "hero_ablations", "reinforce_ada", "sparse_to_dense"):
    for ext in ("md", "csv", "tex"):
      assert os.path.getsize(os.path.join(workdir, "tables", f"{name}.{ext}")) > 0, name
    tex = open(os.path.join(workdir, "tables", f"{name}.tex")).read()
    assert "\\begin{tabular}" in tex and "\\end{tabular}" in tex
  for png in ("grpo_curves", "hero_curves", "reinforce_ada_step", "reinforce_ada_samples",
              "sparse_to_dense_rl", "sparse_to_dense_fkl", "sparse_to_dense_opd"):
    assert matplotlib.image.imread(os.path.join(workdir, "plots", f"{png}.png")).shape[0] > 100
  rows = _csv(workdir, "slice")
  assert [r["arm"] for r in rows] == ["SFT cold start", "SFT + GRPO", "GRPO - SFT (paired)"]
  assert all(0.0 <= float(r["avg@2"]) <= 100.0 for r in rows[:2])


def test_the_stage_count_is_what_runs(quickstart):
  # The count comes from a dry run of the code that runs the stages: every stage it
  # announced ran (a directory with a summary) or was asked for again and reused.
  workdir, stdout = quickstart
  planned = int(re.search(r"; (\d+) stages \(finished ones", stdout).group(1))
  ran, reused = map(int, re.search(r"this call ran (\d+) and reused (\d+)", stdout).groups())
  assert ran + reused == planned
  stage_dirs = [os.path.dirname(p) for p in glob.glob(os.path.join(workdir, "**", "config.json"),
                                                       recursive=True)
                if os.path.exists(os.path.join(os.path.dirname(p), "summary.json"))]
  assert ran == len(stage_dirs)
  assert ran == stdout.count("\n== ")


def test_seeds_run_side_by_side_and_a_recipe_can_run_more_seeds(tmp_path):
  # The slice runs 1 seed, Reinforce-Ada 2: seed 1 is its SFT cold start and Ada alone.
  workdir = str(tmp_path / "run")
  proc = run_module("experiments.quickstart", f"--workdir={workdir}", *ARGS,
                    "--config.recipes=slice,reinforce_ada", "--config.num_seeds=1",
                    "--config.reinforce_ada.num_seeds=2", "--config.seed_processes=2")
  assert "seed 0 done" in proc.stdout and "seed 1 done" in proc.stdout
  for seed in (0, 1):  # each seed ran in its own process, which wrote its log
    log = open(os.path.join(workdir, "logs", f"seed{seed}.log")).read()
    assert f"seeds [{seed}] done" in log and "reinforce_ada/seed" in log
    # The slice's GRPO runs on seed 0 alone.
    slice_grpo = re.findall(r"-> (?:\S*/)?(seed\d/grpo)[\s\[]", log)
    assert slice_grpo == (["seed0/grpo"] if seed == 0 else []), slice_grpo
  # The command itself then reused every stage and wrote the tables over both seeds.
  planned = int(re.search(r"; (\d+) stages \(finished ones", proc.stdout).group(1))
  assert f"this call ran 0 and reused {planned}" in proc.stdout
  summary = json.load(open(os.path.join(workdir, "tables", "summary.json")))
  assert summary["seeds"] == [0, 1]
  assert summary["recipe_seeds"] == {"slice": 1, "reinforce_ada": 2}
  assert len(summary["slice"]["sft"]) == 2 and len(summary["slice"]["grpo"]) == 1
  assert len(summary["reinforce_ada"]["ada_balance"]) == 2
  diff = summary["paired"]["Reinforce-Ada: ada_balance - grpo (test)"]
  assert len(diff["per_seed"]) == 2 and diff["mdd80"] is not None
  speed = summary["reinforce_ada_speed"]
  assert set(speed) == {"grpo", "ada_pos", "ada_balance", "dynamic"}
  assert len(summary["paired"]["Reinforce-Ada: ada_balance - dynamic (test)"]["per_seed"]) == 2
  assert speed["grpo"]["step"] is not None  # GRPO reaches its own final accuracy
  assert len(speed["ada_pos"]["final_val"]) == 2
  assert os.path.exists(os.path.join(workdir, "tables", "reinforce_ada_speed.md"))


def test_a_dry_run_runs_nothing_and_records_each_call(tmp_path):
  from configs import default  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import stage_runs  # pylint: disable=g-import-not-at-top
  config = default.get_config("toy")
  with stage_runs.dry_run() as calls:
    chain = stage_runs.Chain(config, str(tmp_path), seed=3)
    first = chain.run("a", {"train.steps": 2})
    chain.run("a", {"train.steps": 2})
  assert calls == [first, first] and first == str(tmp_path / "seed3" / "a")
  assert chain.summaries == {"a": {}} and not os.listdir(tmp_path)


def test_summary_json_holds_the_tables_numbers_per_seed(quickstart):
  workdir, _ = quickstart
  summary = json.load(open(os.path.join(workdir, "tables", "summary.json")))
  pct = lambda *path: round(100 * json.load(open(os.path.join(workdir, *path, "eval.json")))[
      "overall"]["avg@k"], 2)
  assert summary["preset"] == "micro" and summary["seeds"] == [0]
  assert summary["slice"]["sft"] == [pct("seed0", "eval_sft")]
  assert summary["slice"]["grpo"] == [pct("seed0", "eval_grpo")]
  assert summary["slice"]["gain"] == [round(pct("seed0", "eval_grpo") - pct("seed0", "eval_sft"), 2)]
  s2d = ("sparse_to_dense", "seed0", "eval")
  assert summary["student_cold_start"] == [pct(*s2d, "start")]
  assert summary["teacher"] == {"cold_start": [pct(*s2d, "teacher_start")],
                                "after_stage1": [pct(*s2d, "teacher_grpo")]}
  assert summary["sparse_to_dense"]["recipe"] == [pct(*s2d, "recipe")]
  rm = json.load(open(os.path.join(workdir, "tables", "hero_rm.json")))
  assert summary["rm_auc"] == [None if rm[0]["auc"] is None else round(rm[0]["auc"], 4)]
  assert summary["hero"]["easy-hero"]["hard"] == [round(100 * json.load(open(os.path.join(
      workdir, "hero", "seed0", "arms", "easy-hero", "eval", "eval.json")))["family"]["hard"][
          "avg@k"], 2)]
  assert set(summary["reinforce_ada"]) == {"split", "grpo", "ada_pos", "ada_balance", "dynamic"}
  # Ada, dynamic sampling and GRPO start from the same cold start, with groups of n.
  arms = {}
  for arm in ("grpo", "ada_pos", "ada_balance", "dynamic"):
    with open(os.path.join(workdir, "reinforce_ada", "seed0", arm, "grpo", "config.json")) as f:
      arms[arm] = json.load(f)
  assert len({c["init_from"] for c in arms.values()}) == 1
  assert arms["dynamic"]["rl"]["sampling"] == "dynamic"
  assert arms["dynamic"]["sampling"]["num_samples"] == arms["grpo"]["sampling"]["num_samples"]
  assert "strict_recall_hard" not in summary  # families.hard.strict_recall holds it
  assert summary["stage_minutes"] > 0
  sl = summary["slice"]
  assert sl["ci_low"][0] <= sl["gain"][0] <= sl["ci_high"][0]
  sft_eval = json.load(open(os.path.join(workdir, "seed0", "eval_sft", "eval.json")))
  for family, row in summary["families"].items():
    assert row["cold_start_oracle"] == [round(100 * sft_eval["family"][family]["avg@k"], 2)]
    recall = sft_eval["strict_vs_oracle"][family]["recall"]
    assert row["strict_recall"] == [None if recall is None else round(recall, 4)]
    auc = rm[0]["family"][family]["auc"]
    assert row["rm_auc"] == [None if auc is None else round(auc, 4)]
  diffs = summary["paired"]
  assert diffs["slice: GRPO - SFT (validation)"] == {
      "per_seed": summary["slice"]["gain"], "mean": summary["slice"]["gain"][0], "ci95": None,
      "mdd80": None}
  hard_hero = diffs["HERO: hard regime, HERO - verifier (hard test)"]["per_seed"]
  assert hard_hero == [round(summary["hero"]["hard-hero"]["hard"][0]
                             - summary["hero"]["hard-verifier"]["hard"][0], 2)]
  assert "Reinforce-Ada: ada_balance - grpo (test)" in diffs
  assert "sparse-to-dense: recipe - direct_grpo (student, test)" in diffs


def test_hero_arms_and_tables(quickstart):
  workdir, _ = quickstart
  main = _csv(workdir, "hero_main")
  assert [(r["training regime"], r["method"]) for r in main] == [
      ("none (the SFT cold start, before RL)", "-")] + [
      (reg, m) for reg in ("easy-to-verify", "hard-to-verify")
      for m in ("RM-only", "verifier-only", "HERO")]
  assert all(r["easy (paper)"] and r["easy (ours)"] != "-" for r in main[1:])
  start_eval = json.load(open(os.path.join(workdir, "hero", "seed0", "eval_start", "eval.json")))
  assert start_eval["split"] == "test"
  assert main[0]["easy (ours)"] == f"{100 * start_eval['family']['easy']['avg@k']:.1f}"
  by_label = {r["ablation"]: r for r in _csv(workdir, "hero_ablations")}
  assert by_label["dense both"]["arm"] == by_label["variance weighting on"]["arm"] == "easy-hero"
  assert by_label["alpha 0.2"]["arm"] == "easy-hero-alpha_0.2"
  assert by_label["advantage std over the batch"]["arm"] == "easy-hero-std_batch"
  std_batch = json.load(open(os.path.join(workdir, "hero", "seed0", "arms", "easy-hero-std_batch",
                                          "grpo", "config.json")))
  assert std_batch["rl"]["std_mode"] == "batch" and std_batch["reward"]["mode"] == "hero"
  arms = os.path.join(workdir, "hero", "seed0", "arms")
  last = lambda arm: read_metrics(os.path.join(arms, arm, "grpo", "metrics.jsonl"))[-1]
  # Each arm trained with its own reward: HERO logs its weights, RM-only its RM scores.
  assert "hero_weight_mean" in last("easy-hero")
  assert "hero_weight_mean" not in last("easy-hero-no_variance_weighting")
  assert "rm_score_mean" in last("easy-rm") and "rm_score_mean" not in last("easy-verifier")
  config = json.load(open(os.path.join(arms, "hard-hero", "grpo", "config.json")))
  assert config["data"]["train_families"] == "hard" and config["rl"]["verifier"] == "strict"
  # All recipes start from the one shared SFT cold start.
  assert config["init_from"] == os.path.join(workdir, "seed0", "sft")
  rm = json.load(open(os.path.join(workdir, "tables", "hero_rm.json")))
  assert 0 <= rm[0]["accuracy"] <= 1 and rm[0]["n"] > 0


def test_reinforce_ada_table_has_cost_columns(quickstart):
  workdir, _ = quickstart
  rows = _csv(workdir, "reinforce_ada")
  assert [r["method"] for r in rows] == ["GRPO (n)", "Reinforce-Ada-Pos", "Reinforce-Ada-Balance",
                                         "GRPO + dynamic sampling"]
  grpo, ada_pos, ada_bal, dynamic = (float(r["samples/step"]) for r in rows)
  assert grpo == 4 * 2  # prompts x n
  assert ada_pos >= 4 * 4 and ada_bal >= 4 * 4  # at least one round of M per prompt
  # One to rl.dynamic.max_batches batches of prompts x n a step.
  assert 4 * 2 <= dynamic <= 4 * 4 * 2
  assert all(float(r["s/step"]) > 0 and r["paper avg@32"] for r in rows)


def test_sparse_to_dense_chains_checkpoints_and_accounts_labels(quickstart):
  workdir, _ = quickstart
  seed = os.path.join(workdir, "sparse_to_dense", "seed0")
  student0 = os.path.join(workdir, "seed0", "sft")
  cfg = lambda stage: json.load(open(os.path.join(seed, stage, "config.json")))
  summary = lambda stage: json.load(open(os.path.join(seed, stage, "summary.json")))
  assert cfg("teacher_grpo")["init_from"] == os.path.join(seed, "teacher_sft")
  fkl, opd = cfg("bridge_rl/fkl"), cfg("bridge_rl/opd")
  assert fkl["init_from"] == student0
  assert fkl["distill"]["teacher_from"] == os.path.join(seed, "teacher_grpo")
  assert (fkl["distill"]["rollouts"], opd["distill"]["rollouts"]) == ("teacher", "student")
  assert opd["init_from"] == os.path.join(seed, "bridge_rl", "fkl")
  assert cfg("bridge_pre/fkl")["distill"]["teacher_from"] == os.path.join(seed, "teacher_sft")
  assert cfg("opd_only/opd")["init_from"] == student0
  assert cfg("bridge_rl/stage3")["init_from"] == os.path.join(seed, "bridge_rl", "opd")
  assert cfg("bridge_rl/replay")["init_from"] == os.path.join(seed, "bridge_rl", "opd")
  assert cfg("direct_grpo")["init_from"] == student0
  assert cfg("teacher_grpo")["data"]["train_split"] == cfg("direct_grpo")["data"]["train_split"]
  # Labelled accounting: GRPO stages count steps x prompts, distillation none.
  stage1 = summary("teacher_grpo")
  assert stage1["labelled_prompts"] == 2 * 4
  assert summary("bridge_rl/opd")["labelled_prompts"] == 0
  rows = {r["arm"]: r for r in _csv(workdir, "sparse_to_dense")}
  recipe = rows["bridge: RL teacher, FKL -> OPD"]
  assert int(recipe["labelled prompts"]) == stage1["labelled_prompts"]
  assert float(recipe["samples"]) == sum(summary(s)["samples_total"] for s in (
      "teacher_grpo", "bridge_rl/fkl", "bridge_rl/opd"))
  assert int(rows["bridge + Stage 3 student GRPO"]["labelled prompts"]) == 16
  assert int(rows["direct student GRPO (same labelled budget)"]["labelled prompts"]) == 8
  assert int(rows["bridge from the pre-RL teacher"]["labelled prompts"]) == 0
  assert int(rows["bridge + replay control (Stage 3 steps on bridge data)"]["labelled prompts"]) == 8


def test_second_start_reuses_every_stage_and_writes_the_readme_section(quickstart, tmp_path):
  workdir, _ = quickstart
  readme = tmp_path / "README.md"
  def section(preset, body):
    return (f"<!-- quickstart results, preset {preset}: begin (written by "
            f"experiments.quickstart --readme) -->\n{body}\n"
            f"<!-- quickstart results, preset {preset}: end -->\n")
  readme.write_text("# title\n" + section("micro", "old") + section("full", "kept") + "tail\n")
  again = run_module("experiments.quickstart", f"--workdir={workdir}", f"--readme={readme}",
                     *ARGS)
  assert "\n== " not in again.stdout  # no stage ran
  assert "### Sparse-to-dense: student accuracy" in again.stdout
  text = readme.read_text()
  assert text.startswith("# title\n") and "\nold\n" not in text
  assert text.endswith(section("full", "kept") + "tail\n")  # another preset's section stays
  assert "Quickstart report of" in text and "#### HERO: regime x reward method" in text
  assert open(os.path.join(workdir, "tables", "quickstart.md")).read() in text


def test_changed_settings_on_a_finished_stage_fail_with_one_line(quickstart):
  workdir, _ = quickstart
  summary = os.path.join(workdir, "seed0", "sft", "summary.json")
  before = open(summary).read()
  proc = run_module("experiments.quickstart", f"--workdir={workdir}", *ARGS,
                    "--config.sft.steps=5", check=False)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  fatal = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
  assert len(fatal) == 1 and os.path.join("seed0", "sft") in fatal[0], proc.stderr[-3000:]
  assert "train.steps: 4 -> 5" in proc.stderr
  assert open(summary).read() == before  # the finished stage is kept


def test_a_call_for_some_seeds_runs_only_theirs_and_writes_no_tables(quickstart):
  """--seeds lets several processes share one workdir; the tables wait for a call with all."""
  workdir, _ = quickstart
  tables_md = os.path.join(workdir, "tables", "quickstart.md")
  before = open(tables_md).read()
  proc = run_module("experiments.quickstart", f"--workdir={workdir}", *ARGS,
                    "--config.num_seeds=2", "--seeds=0")
  assert "\n== " not in proc.stdout  # seed 0's stages are reused, seed 1's not started
  assert "seeds [0] done" in proc.stdout and "without --seeds writes the tables" in proc.stdout
  assert not os.path.exists(os.path.join(workdir, "seed1"))
  assert open(tables_md).read() == before
  bad = run_module("experiments.quickstart", f"--workdir={workdir}", *ARGS, "--seeds=0,5",
                   check=False)
  fatal = [l for l in bad.stderr.splitlines() if l.startswith("FATAL")]
  assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr[-3000:]
  assert len(fatal) == 1 and "--seeds='0,5'" in fatal[0] and "0..0" in fatal[0], fatal


def test_paired_differences_give_the_t_interval_of_per_seed_differences(tmp_path):
  summary = {"slice": {"sft": [10.0, 20.0, 30.0], "grpo": [12.0, 24.0, 36.0],
                       "gain": [2.0, 4.0, 6.0]},
             "reinforce_ada": {"grpo": [5.0, 5.0, 5.0], "ada_balance": [4.0, 6.0, 4.5]}}
  diffs = paired.paired_differences(summary)
  slice_diff = diffs["slice: GRPO - SFT (validation)"]
  # mean 4, sd 2: t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547
  assert slice_diff["per_seed"] == [2.0, 4.0, 6.0] and slice_diff["mean"] == 4.0
  assert abs(slice_diff["ci95"] - 4.968) < 0.01
  # Power 0.8 on the noncentral t with 2 degrees of freedom, sd 2, n 3 (the normal-quantile
  # approximation (t(0.975, 2) + t(0.8, 2)) * 2 / sqrt(3) would give 6.19).
  assert abs(slice_diff["mdd80"] - 6.53) < 0.01
  assert diffs["Reinforce-Ada: ada_balance - grpo (test)"]["per_seed"] == [-1.0, 1.0, -0.5]
  table = paired.paired_table(diffs, str(tmp_path / "paired"))
  assert ("| slice: GRPO - SFT (validation) | +2.0, +4.0, +6.0 | 4.0 ± 5.0 | not separated "
          "| 6.5 |") in table
  assert os.path.exists(tmp_path / "paired.csv")
