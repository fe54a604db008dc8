r"""The main job on the embedded default: one command, no network, every recipe.

  python -m experiments.quickstart --workdir=/tmp/hybrid_rl

Builds the synthetic data and tokenizer, cold-starts the tiny student by SFT
(shared by all recipes; by sparse-to-dense's student only where its student_sft
block asks for the same run), then runs per seed: the SFT -> GRPO slice, HERO
(reward model + regime x method), Reinforce-Ada (GRPO vs Ada-Pos vs
Ada-Balance) and the sparse-to-dense pipeline (tiny teacher -> student).
Prints the tables and writes them as markdown, CSV and LaTeX to
<workdir>/tables/ with learning curves in <workdir>/plots/. A bar shows the
stage running and an ETA; re-running with the same --workdir reuses every
finished stage. --config=configs/quickstart.py:full runs 3 seeds at the
experiment scripts' sizes.
"""
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time

from absl import flags
import jax
import ml_collections
import numpy as np

from configs import quickstart as quickstart_config
from experiments import hero
from experiments import reinforce_ada
from experiments import sparse_to_dense
from hybrid_rl import cli
from hybrid_rl import errors
from hybrid_rl.data import builders
from hybrid_rl.eval import paired
from hybrid_rl.eval import plots
from hybrid_rl.eval import tables
from hybrid_rl.parallel import distributed
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_io
from hybrid_rl.train import stage_runs
from hybrid_rl.train import workdir_lock

_CONFIG = cli.define_config("configs/quickstart.py:default")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/hybrid_rl", "Output directory.")
_README = flags.DEFINE_string("readme", "", "If set, a README whose results section for this "
                              "preset (between its quickstart markers) is replaced by this run's "
                              "report.")
_SEEDS = flags.DEFINE_string("seeds", "", "Comma list of seeds to run (default: all of "
                             "config.num_seeds) and write no tables: several such calls on one "
                             "--workdir run seeds side by side; a call without it then reuses "
                             "their stages and writes the tables.")


RECIPE_BLOCKS = ("hero", "reinforce_ada", "sparse_to_dense")


def recipe_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """An experiment's block with the top level's shared blocks (one dataset, one
  tokenizer, one verifier setting) and no per-stage progress bars."""
  sub = ml_collections.ConfigDict(config[name].to_dict())
  for block in quickstart_config.SHARED_BLOCKS:
    sub[block] = ml_collections.ConfigDict(config[block].to_dict())
  sub.log.progress = False
  if "sft" in sub:  # the shared cold start, so that the tables state it
    sub.sft = ml_collections.ConfigDict(config.sft.to_dict())
  return sub


def recipe_blocks(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """Each recipe's block as its stages run it (recipe_config)."""
  return {name: recipe_config(config, name) for name in RECIPE_BLOCKS}


def recorded_config(config: ml_collections.ConfigDict) -> dict:
  """What <workdir>/config.json records: the config with every recipe block as its stages
  ran it (the shared data, tokenizer and verifier blocks in place of the block's own)."""
  return {**config.to_dict(), **{name: block.to_dict()
                                 for name, block in recipe_blocks(config).items()}}


def recipe_seeds(config: ml_collections.ConfigDict) -> dict[str, int]:
  """How many seeds each recipe of config.recipes runs: the slice config.num_seeds,
  the others their block's num_seeds (seed s of every recipe starts from the same SFT
  cold start, so a recipe that needs more power can run more seeds alone)."""
  return {r: config.num_seeds if r == "slice" else config[r].num_seeds
          for r in config.recipes.split(",")}


def total_seeds(config: ml_collections.ConfigDict) -> int:
  """Seeds of the SFT cold start: as many as the recipe with the most (at least
  config.num_seeds)."""
  return max([config.num_seeds, *recipe_seeds(config).values()])


def slice_seed(config: ml_collections.ConfigDict, root: str, seed: int) -> tuple[str, dict]:
  """SFT cold start -> eval -> GRPO -> eval; returns (SFT dir, results)."""
  c = stage_runs.Chain(config, root, seed)
  stage = lambda stage, init_from, block=None: {
      "stage": stage, "init_from": init_from, "log.progress": False,
      **(stage_runs.block_overrides(block) if block is not None else {})}
  sft = c.run("sft", stage("sft", "", config.sft))
  c.run("eval_sft", stage("eval", sft))
  out = {"sft": c.summaries["eval_sft"]}
  if "slice" in config.recipes.split(",") and seed < config.num_seeds:
    c.run("eval_grpo", stage("eval", c.run("grpo", stage("grpo", sft, config.grpo))))
    out["grpo"] = c.summaries["eval_grpo"]
  return sft, out


def run_seeds(config: ml_collections.ConfigDict, subs: dict, root: str, seeds: list[int]
              ) -> dict[str, list[dict]]:
  """Every recipe of config.recipes for each seed: recipe -> per-seed results."""
  results = {"slice": [], "hero": [], "reinforce_ada": [], "sparse_to_dense": []}
  s2d_shared_role = quickstart_config.shared_cold_start(config)
  for seed in seeds:
    runs = {r: seed < n for r, n in recipe_seeds(config).items()}
    sft_dir, slice_result = slice_seed(config, root, seed)
    results["slice"].append(slice_result)
    if runs.get("hero"):
      results["hero"].append(hero.run_seed(subs["hero"], os.path.join(root, "hero"), seed,
                                           start=sft_dir))
    if runs.get("reinforce_ada"):
      results["reinforce_ada"].append(reinforce_ada.run_seed(
          subs["reinforce_ada"], os.path.join(root, "reinforce_ada"), seed, start=sft_dir))
    if runs.get("sparse_to_dense"):
      s2d = subs["sparse_to_dense"]
      if s2d_shared_role:
        s2d = stage_runs.derive(s2d, {f"{s2d_shared_role}_init_from": sft_dir})
      results["sparse_to_dense"].append(sparse_to_dense.run_seed(
          s2d, os.path.join(root, "sparse_to_dense"), seed))
  return results


def slice_problem_differences(results: list[dict], k: int) -> list[dict]:
  """Per seed, GRPO - SFT over the eval problems (avg@k per problem, in points) with its
  paired 95% bootstrap interval (paired.problem_difference)."""
  per_problem = lambda ev: np.asarray(ev["correct_per_example"], np.float64) / k
  return [paired.problem_difference(per_problem(r["sft"]), per_problem(r["grpo"]), seed=seed)
          for seed, r in enumerate(results)]


def slice_table(results: list[dict], config: ml_collections.ConfigDict, stem: str) -> str:
  """SFT vs GRPO oracle accuracy on the eval split, mean +- 95% CI over seeds."""
  k = config.eval.num_samples
  def cell(evals, key="avg@k", family=None):
    vals = [(e["family"][family] if family else e["overall"])[key] for e in evals]
    return tables.fmt(*tables.mean_ci95(vals))
  rows = []
  for arm, name in (("sft", "SFT cold start"), ("grpo", "SFT + GRPO")):
    ev = [r[arm] for r in results]
    rows.append({"arm": name, f"avg@{k}": cell(ev), f"avg@{k} easy": cell(ev, family="easy"),
                 f"avg@{k} hard": cell(ev, family="hard"), f"pass@{k}": cell(ev, "pass@k")})
  diff = [r["grpo"]["overall"]["avg@k"] - r["sft"]["overall"]["avg@k"] for r in results]
  rows.append({"arm": "GRPO - SFT (paired)", f"avg@{k}": tables.fmt(*tables.mean_ci95(diff))})
  m = config.model
  notes = [f"Setup: synthetic_math, student {m.hidden_size}d x {m.num_layers} layers. Oracle "
           f"(equivalence verifier) accuracy (%) on {config.eval.split} "
           f"({results[0]['sft']['overall']['n']} problems, {k} samples each, "
           f"T={config.eval.temperature}), mean ± 95% CI over {len(diff)} seed(s).",
           f"SFT: {config.sft.steps} steps x {config.sft.batch_size} on {config.sft.split}; "
           f"GRPO: {config.grpo.steps} steps x {config.grpo.batch_size} prompts x "
           f"{config.grpo.num_samples} samples on {config.grpo.split}, lr "
           f"{config.grpo.learning_rate}.",
           "GRPO - SFT over the same problems, per seed (paired bootstrap 95% interval): " +
           "; ".join(f"seed {i}: {d['mean']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"
                     for i, d in enumerate(slice_problem_differences(results, k))) + ".",
           "No paper row: this is the shared vertical slice (GRPO of DeepSeekMath, as "
           "implemented by TRL / verl)."]
  return tables.write_table(rows, list(rows[0]), stem, title="SFT -> GRPO slice",
                            notes=notes)["md"]


def summary(config: ml_collections.ConfigDict, results: dict, stage_minutes: float,
            call_minutes: float) -> dict:
  """The run's headline numbers as per-seed lists (accuracies in %, avg@k of each
  table's split), for programs; `<workdir>/tables/summary.json`. stage_minutes adds
  the wall time of every stage when it ran; call_minutes is this call's (near 0 when
  every stage was reused).

  slice.ci_low / ci_high: the paired 95% interval of GRPO - SFT over problems;
  reinforce_ada_speed: reinforce_ada.learning_speed (validation);
  families.<family>: the SFT cold start's validation avg@k (cold_start_oracle), the
  strict checker's recall and precision on its samples, and the HERO reward model's
  held-out AUC on that family's samples.
  """
  pct = lambda ev, family=None: round(
      100 * (ev["family"][family] if family else ev["overall"])["avg@k"], 2)
  out = {"preset": config.preset, "seeds": list(range(total_seeds(config))),
         "recipe_seeds": recipe_seeds(config),
         "stage_minutes": round(stage_minutes, 2), "call_minutes": round(call_minutes, 2)}
  if results["slice"]:
    sl = results["slice"]  # every seed's cold start; the slice's GRPO on its own seeds
    trained = [r for r in sl if "grpo" in r]
    out["slice"] = {"split": config.eval.split, "k": config.eval.num_samples,
                    "sft": [pct(r["sft"]) for r in sl]}
    if trained:
      out["slice"]["grpo"] = [pct(r["grpo"]) for r in trained]
      out["slice"]["gain"] = [round(g - s, 2) for g, s in zip(out["slice"]["grpo"],
                                                               out["slice"]["sft"])]
      diffs = slice_problem_differences(trained, config.eval.num_samples)
      out["slice"]["ci_low"] = [round(d["ci_low"], 2) for d in diffs]
      out["slice"]["ci_high"] = [round(d["ci_high"], 2) for d in diffs]
    out["families"] = {f: {
        "cold_start_oracle": [pct(r["sft"], f) for r in sl],
        "strict_recall": [_finite(r["sft"]["strict_vs_oracle"][f]["recall"]) for r in sl],
        "strict_precision": [_finite(r["sft"]["strict_vs_oracle"][f]["precision"]) for r in sl]}
                       for f in sorted(sl[0]["sft"].get("family", {}))}
  if results["hero"]:
    he = results["hero"]
    # None where a seed's held-out samples hold one class only (AUC undefined).
    out["rm_auc"] = [_finite(r["rm"]["auc"]) for r in he if r["rm"]]
    for f, row in out.get("families", {}).items():
      row["rm_auc"] = [_finite(r["rm"].get("family", {}).get(f, {}).get("auc")) for r in he
                       if r["rm"]]
    out["hero"] = {"split": config.hero.final_eval_split, "start": {
        f: [pct(r["start"], f) for r in he] for f in ("easy", "hard")}}
    for arm in he[0]["arms"]:
      out["hero"][arm] = {f: [pct(r["arms"][arm], f) for r in he] for f in ("easy", "hard")}
  if results["reinforce_ada"]:
    ra = results["reinforce_ada"]
    out["reinforce_ada"] = {"split": config.reinforce_ada.final_eval_split, **{
        arm: [pct(r[arm]["eval"]) for r in ra] for arm in ra[0]}}
    out["reinforce_ada_speed"] = reinforce_ada.learning_speed(ra, list(ra[0]))
  if results["sparse_to_dense"]:
    sd = results["sparse_to_dense"]
    out["student_cold_start"] = [pct(r["arms"]["start"]["eval"]) for r in sd]
    out["teacher"] = {"cold_start": [pct(r["teacher_before"]) for r in sd],
                      "after_stage1": [pct(r["teacher_after"]) for r in sd]}
    out["sparse_to_dense"] = {"split": config.sparse_to_dense.final_eval_split, **{
        arm: [pct(r["arms"][arm]["eval"]) for r in sd] for arm in sd[0]["arms"]}}
  out["paired"] = paired.paired_differences(out)
  return out


def _finite(x) -> float | None:
  """x rounded, or None for a missing or undefined figure (an AUC of one class)."""
  return round(x, 4) if x is not None and math.isfinite(x) else None


def seeds_to_run(flag: str, num_seeds: int) -> list[int]:
  """The --seeds flag as a list of seeds (all of range(num_seeds) when empty)."""
  if not flag:
    return list(range(num_seeds))
  try:
    seeds = sorted({int(s) for s in flag.split(",")})
  except ValueError:
    seeds = []
  if not seeds or not all(0 <= s < num_seeds for s in seeds):
    raise errors.ConfigError(f"--seeds={flag!r}: expected a comma list of seeds in "
                                    f"0..{num_seeds - 1} (config.num_seeds={num_seeds})")
  return seeds


def prepare_data(config: ml_collections.ConfigDict, root: str) -> None:
  """Builds the dataset and the tokenizer every stage reads (one of each: the recipes
  share config.data), so that seed processes started side by side only read them (two
  processes building one TFDS dataset at once collide on its final directory)."""
  for split in builders.SPLITS[config.data.name]:
    stage_io.load_split(config, root, split)
  if config.data.name == "synthetic_math":
    stage_io.tokenizer_path(config, root)


def _die_with_parent() -> None:
  """In a child, before exec: the kernel sends it SIGTERM when its parent dies, however
  the parent dies (SIGKILL included), so no seed process outlives the command."""
  import ctypes  # pylint: disable=g-import-not-at-top
  pr_set_pdeathsig = 1
  ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_seed_processes(seeds: list[int], root: str, processes: int) -> None:
  """Runs the seeds side by side, `processes` at a time, each as this command with
  --seeds=<seed> (output in <root>/logs/seed<seed>.log). A seed that fails stops the
  command with one line naming its log; the stages that finished are kept for a rerun.
  The children share this process's hold on the workdir and end with it: when it is
  stopped (a signal, an error) it stops them, and if it is killed the kernel does."""
  os.makedirs(os.path.join(root, "logs"), exist_ok=True)
  command = [sys.executable, "-m", "experiments.quickstart", *sys.argv[1:]]
  pending, running = list(seeds), {}
  print(f"seeds {seeds}: {processes} processes side by side, logs in "
        f"{os.path.join(root, 'logs')}", flush=True)
  try:
    while pending or running:
      while pending and len(running) < processes:
        seed = pending.pop(0)
        log = open(os.path.join(root, "logs", f"seed{seed}.log"), "w")
        running[seed] = (subprocess.Popen(
            [*command, f"--seeds={seed}"], stdout=log, stderr=subprocess.STDOUT,
            env=workdir_lock.child_env(),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None), log)
      time.sleep(1)
      for seed, (proc, log) in list(running.items()):
        if proc.poll() is None:
          continue
        log.close()
        del running[seed]
        if proc.returncode:
          sys.exit(f"FATAL seed {seed} failed (exit {proc.returncode}); its output: {log.name}. "
                   "Finished stages are kept: the same command reuses them")
        print(f"seed {seed} done", flush=True)
  finally:
    for proc, _ in running.values():
      proc.terminate()
    for proc, _ in running.values():
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()


def main(argv):
  del argv
  seeds = seeds_to_run(_SEEDS.value, total_seeds(_CONFIG.value))  # before the workdir is made
  # The stage count (for the progress bar) comes from a dry run of the code that runs
  # them, which also refuses a stage directory holding another run before anything is
  # written.
  config, root, planned = cli.experiment_setup(
      _CONFIG, _WORKDIR.value,
      plan=lambda config, root: run_seeds(config, recipe_blocks(config), root, seeds),
      shown=recorded_config)
  recipes = config.recipes.split(",")
  if (config.seed_processes > 1 and not _SEEDS.value and len(seeds) > 1
      and distributed.is_main() and jax.process_count() == 1):
    prepare_data(config, root)
    run_seed_processes(seeds, root, config.seed_processes)  # then every stage is reused
  subs = recipe_blocks(config)
  start_time = time.perf_counter()
  total = len(planned)
  if distributed.is_main():
    print(f"quickstart, preset {config.preset}: {', '.join(recipes)}; seeds {seeds}; "
          f"{total} stages (finished ones in {root} are reused); tables -> "
          f"{os.path.join(root, 'tables')}, plots -> {os.path.join(root, 'plots')}", flush=True)
  progress = stage_runs.Progress(total, root,
                                 enabled=config.log.progress and distributed.is_main())
  stage_runs.track(progress)
  try:
    results = run_seeds(config, subs, root, seeds)
  finally:
    stage_runs.track(None)
    progress.close()
  if not distributed.is_main():
    return
  if len(seeds) < total_seeds(config):
    print(f"seeds {seeds} done in {root}; the same command without --seeds writes the tables",
          flush=True)
    return
  out = []
  if "slice" in recipes:
    out.append(slice_table([r for r in results["slice"] if "grpo" in r], config, os.path.join(root, "tables", "slice")))
    plots.plot_learning_curves(
        {f"seed{s}": metrics_lib.read_metrics(os.path.join(root, f"seed{s}", "grpo", "metrics.jsonl"))
         for s in range(config.num_seeds)}, ["reward_mean", "eval/avg@k"],
        os.path.join(root, "plots", "grpo_curves.png"))
  if "hero" in recipes:
    out += hero.write_outputs(subs["hero"], results["hero"], os.path.join(root, "hero"), root)
  if "reinforce_ada" in recipes:
    out.append(reinforce_ada.write_outputs(subs["reinforce_ada"], results["reinforce_ada"], root))
  if "sparse_to_dense" in recipes:
    out.append(sparse_to_dense.table(subs["sparse_to_dense"], results["sparse_to_dense"],
                                     os.path.join(root, "tables", "sparse_to_dense")))
    sparse_to_dense.write_plots(results["sparse_to_dense"], os.path.join(root, "plots"))
  minutes = (time.perf_counter() - start_time) / 60
  header = (f"Quickstart report of {datetime.date.today().isoformat()}: preset "
            f"`{config.preset}`, seeds per recipe "
            f"{', '.join(f'{r} {n}' for r, n in recipe_seeds(config).items())}, on "
            f"{os.cpu_count()} CPU core(s) "
            f"({jax.devices()[0].platform}). Its {len(progress.stage_times)} stages took "
            f"{sum(progress.stage_times.values()) / 60:.1f} min of wall time when they ran; "
            f"this call ran "
            f"{progress.ran} and reused {progress.done - progress.ran} in {minutes:.1f} min.")
  numbers = summary(config, results, sum(progress.stage_times.values()) / 60, minutes)
  with open(os.path.join(root, "tables", "summary.json"), "w") as f:
    json.dump(numbers, f, indent=1)
  if total_seeds(config) > 1:
    out.append(paired.paired_table(numbers["paired"], os.path.join(root, "tables", "paired")))
  report = "\n\n".join([header] + [t.replace("### ", "#### ") for t in out])
  with open(os.path.join(root, "tables", "quickstart.md"), "w") as f:
    f.write(report + "\n")
  if _README.value:
    replace_readme_section(_README.value, report, config.preset)
  print("\n\n".join(out + [header, f"tables in {os.path.join(root, 'tables')}, plots in "
                             f"{os.path.join(root, 'plots')}"]), flush=True)


def readme_markers(preset: str) -> tuple[str, str]:
  """The lines around a preset's results section in the README."""
  return (f"<!-- quickstart results, preset {preset}: begin (written by experiments.quickstart "
          f"--readme) -->", f"<!-- quickstart results, preset {preset}: end -->")


def replace_readme_section(path: str, report: str, preset: str) -> None:
  """Puts `report` between the README's result markers for `preset` (the command
  writes the README's results; nobody types them)."""
  begin, end = readme_markers(preset)
  text = open(path).read()
  if begin not in text or end not in text:
    raise ValueError(f"{path}: no '{begin}' ... '{end}' markers")
  head, rest = text.split(begin, 1)
  _, tail = rest.split(end, 1)
  with open(path + ".tmp", "w") as f:
    f.write(f"{head}{begin}\n{report}\n{end}{tail}")
  os.replace(path + ".tmp", path)


if __name__ == "__main__":
  cli.run(main)
