r"""HERO: training regime x reward method, and the ablations, over seeds.

  python -m experiments.hero --config=configs/hero.py:tiny --workdir=/tmp/hero

Per seed: an SFT cold start of the policy, a reward model (scalar head on the
SFT backbone) trained on the SFT policy's own samples labelled by the oracle
on the SFT half of train (disjoint from the RL prompts and the test split),
then one GRPO run per arm from the SFT checkpoint and an oracle evaluation on
the test split per family (of the SFT checkpoint too: the main table's first
row, what every arm starts from). Arms:
  main       regime (easy / hard / mixed RL prompts) x method (RM-only,
             verifier-only, HERO); the rule verifier is hero.rule_verifier;
  ablations  on hero.ablation_regime: HERO dense range none / neg / pos
             (both = the main HERO arm), alpha = beta in hero.alphas, variance
             weighting off, rl.std_mode=batch (one advantage std over the
             batch instead of per group), naive weighted sum of rule and RM
             rewards.
Finished stages are reused when the script is started again. Writes
<workdir>/tables/hero_main.{md,csv,tex}, hero_ablations.*, and hero_rm.json.
"""
import os

from absl import flags
import ml_collections

from hybrid_rl import cli
from hybrid_rl import errors
from hybrid_rl.eval import plots
from hybrid_rl.eval import tables
from hybrid_rl.parallel import distributed
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_runs


# Regime -> the synthetic_math families its RL prompts come from; "all" keeps every
# problem of the data (real data such as MATH has no easy / hard families).
REGIMES = {"easy": "easy", "hard": "hard", "mixed": "easy,hard", "all": ""}
REGIME_NAMES = {"easy": "easy-to-verify", "hard": "hard-to-verify", "mixed": "mixed",
                "all": "all training problems"}
METHODS = {"rm": ("rm", "RM-only"), "verifier": ("verifier", "verifier-only"),
           "hero": ("hero", "HERO"), "naive": ("naive_sum", "naive sum")}
# Tao et al. 2025, Qwen3-4B-Base: (easy-to-verify eval avg, hard-to-verify eval avg).
PAPER_MAIN = {
    ("easy", "rm"): ("56.4", "54.6"), ("easy", "verifier"): ("58.3", "57.1"),
    ("easy", "hero"): ("62.0", "66.3"), ("hard", "rm"): ("55.1", "53.7"),
    ("hard", "verifier"): ("47.4", "54.2"), ("hard", "hero"): ("56.8", "56.5"),
    ("mixed", "rm"): ("55.1", "54.0"), ("mixed", "verifier"): ("56.1", "58.9"),
    ("mixed", "hero"): ("58.8", "64.1")}
PAPER_ABLATION = {  # easy-to-verify training
    "dense none": ("59.4", "62.2"), "dense neg": ("61.4", "68.4"), "dense pos": ("60.3", "65.2"),
    "dense both": ("62.0", "73.2"), "alpha 0.05": ("62.0", "73.2"), "alpha 0.1": ("60.3", "69.8"),
    "alpha 0.2": ("59.4", "68.6"), "variance weighting off": ("60.8", "69.4"),
    "variance weighting on": ("62.0", "73.2"), "naive sum": ("55.9-58.7", "60.2-61.4")}


def main_alpha(config: ml_collections.ConfigDict, regime: str) -> float:
  return config.hero.alpha_easy if regime == "easy" else config.hero.alpha_other


def check_arms(config: ml_collections.ConfigDict) -> None:
  """One line for a regime or method this script does not know (before any stage runs)."""
  regimes = config.hero.regimes.split(",") + ([config.hero.ablation_regime]
                                              if config.hero.ablations else [])
  for field, values, known in (("regimes / ablation_regime", regimes, REGIMES),
                               ("methods", config.hero.methods.split(","), METHODS)):
    unknown = [v for v in values if v not in known]
    if unknown:
      raise errors.ConfigError(f"config.hero.{field}: unknown {', '.join(map(repr, unknown))} "
                               f"(choose from {', '.join(known)})")
  if config.data.name != "synthetic_math" and any(REGIMES[r] for r in regimes):
    raise errors.ConfigError(
        f"config.hero.regimes={config.hero.regimes!r} with data {config.data.name!r}: easy / "
        "hard / mixed select synthetic_math families; use 'all' for other data")


def arm_list(config: ml_collections.ConfigDict) -> list[tuple[str, str, str, dict]]:
  """(arm id, regime, method, reward overrides); ids name the arm's directory."""
  check_arms(config)
  arms = []
  for regime in config.hero.regimes.split(","):
    for method in config.hero.methods.split(","):
      arms.append((f"{regime}-{method}", regime, method, {}))
  if config.hero.ablations:
    r = config.hero.ablation_regime
    for dense in filter(None, config.hero.dense_ranges.split(",")):
      arms.append((f"{r}-hero-dense_{dense}", r, "hero", {"reward.dense_range": dense}))
    for alpha in (float(a) for a in config.hero.alphas.split(",")):
      if alpha != main_alpha(config, r):
        arms.append((f"{r}-hero-alpha_{alpha:g}", r, "hero",
                     {"reward.alpha": alpha, "reward.beta": alpha}))
    arms.append((f"{r}-hero-no_variance_weighting", r, "hero",
                 {"reward.variance_weighting": False}))
    # Group std division rescales each group's dense spread back up, undoing alpha;
    # one std over the batch keeps the strata's scale (and lets the weights act).
    arms.append((f"{r}-hero-std_batch", r, "hero", {"rl.std_mode": "batch"}))
    arms.append((f"{r}-naive", r, "naive", {}))
  return arms


def arm_overrides(config: ml_collections.ConfigDict, regime: str, method: str, extra: dict,
                  start: str, rm_dir: str) -> dict:
  """The GRPO stage of one arm, from the policy in `start`."""
  alpha = main_alpha(config, regime)
  return {"stage": "grpo", "init_from": start, **stage_runs.block_overrides(config.grpo),
          "data.train_families": REGIMES[regime], "rl.verifier": config.hero.rule_verifier,
          "reward.mode": METHODS[method][0], "reward.alpha": alpha, "reward.beta": alpha,
          "reward.rm_from": "" if method == "verifier" else rm_dir, **extra}


def run_seed(config: ml_collections.ConfigDict, root: str, seed: int,
             start: str | None = None) -> dict:
  """Reward model and every arm of one seed; `start` is a finished policy to begin from
  (else the SFT cold start of config.sft, or config.init_from)."""
  c = stage_runs.Chain(config, root, seed)
  start = c.cold_start(start)
  rm_dir, rm_report = config.reward.rm_from, None
  if config.rm.steps:
    rm_dir = c.run("rm", {"stage": "reward_model", "init_from": start,
                          "reward_model.policy_from": start, **stage_runs.block_overrides(config.rm)})
    rm_report = c.summaries["rm"]
  start_eval = c.evaluate("eval_start", start)  # the row every arm starts from
  results = {}
  for arm_id, regime, method, extra in arm_list(config):
    policy = c.run(os.path.join("arms", arm_id, "grpo"),
                   arm_overrides(config, regime, method, extra, start, rm_dir))
    results[arm_id] = c.evaluate(os.path.join("arms", arm_id, "eval"), policy)
  return {"arms": results, "rm": rm_report, "start": start_eval}


def family_cell(evals: list[dict], family: str) -> str:
  vals = [e["family"][family]["avg@k"] for e in evals if family in e.get("family", {})]
  return tables.fmt(*tables.mean_ci95(vals)) if vals else "-"


def ours(config, evals: list[dict]) -> dict:
  """The table's columns of our runs: avg@k on the easy and hard families of the
  synthetic task, on every problem of other data (MATH, GSM8K)."""
  if config.data.name == "synthetic_math":
    return {"easy (ours)": family_cell(evals, "easy"), "hard (ours)": family_cell(evals, "hard")}
  return {f"{config.data.name} (ours)": tables.fmt(*tables.mean_ci95(
      [e["overall"]["avg@k"] for e in evals]))}


def main_table(config, per_seed: list[dict], stem: str) -> str:
  starts = [s["start"] for s in per_seed]
  rows = [{"training regime": "none (the SFT cold start, before RL)", "method": "-",
           **ours(config, starts), "easy (paper)": "", "hard (paper)": ""}]
  for regime in config.hero.regimes.split(","):
    for method in config.hero.methods.split(","):
      evals = [s["arms"][f"{regime}-{method}"] for s in per_seed]
      paper = PAPER_MAIN.get((regime, method), ("", ""))
      rows.append({"training regime": REGIME_NAMES[regime], "method": METHODS[method][1],
                   **ours(config, evals), "easy (paper)": paper[0], "hard (paper)": paper[1]})
  return tables.write_table(rows, list(rows[0]), stem, title="HERO: regime x reward method",
                            notes=setup_notes(config, per_seed))["md"]


def ablation_table(config, per_seed: list[dict], stem: str) -> str:
  r = config.hero.ablation_regime
  main_hero = f"{r}-hero"
  named = [(f"dense {d}", f"{r}-hero-dense_{d}") for d in config.hero.dense_ranges.split(",") if d]
  named.append(("dense both", main_hero))
  for alpha in (float(a) for a in config.hero.alphas.split(",")):
    named.append((f"alpha {alpha:g}", main_hero if alpha == main_alpha(config, r)
                  else f"{r}-hero-alpha_{alpha:g}"))
  named += [("variance weighting off", f"{r}-hero-no_variance_weighting"),
            ("variance weighting on", main_hero), ("advantage std over the batch",
                                                    f"{r}-hero-std_batch"),
            ("naive sum", f"{r}-naive")]
  rows = []
  for label, arm_id in named:
    evals = [s["arms"][arm_id] for s in per_seed if arm_id in s["arms"]]
    paper = PAPER_ABLATION.get(label, ("", ""))
    rows.append({"ablation": label, "arm": arm_id, **ours(config, evals),
                 "easy (paper)": paper[0], "hard (paper)": paper[1]})
  notes = setup_notes(config, per_seed) + [
      f"Ablations train on the {REGIME_NAMES[r]} regime; rows sharing an arm are one run."]
  return tables.write_table(rows, list(rows[0]), stem, title="HERO ablations", notes=notes)["md"]


def setup_notes(config, per_seed: list[dict]) -> list[str]:
  m, k = config.model, config.eval.num_samples
  notes = [
      f"Setup: {config.data.name}, policy {m.hidden_size}d x {m.num_layers} layers; SFT "
      f"{config.sft.steps} steps; GRPO {config.grpo.steps} steps x {config.grpo.batch_size} "
      f"prompts x {config.grpo.num_samples} samples, lr {config.grpo.learning_rate}; rule "
      f"verifier {config.hero.rule_verifier}; oracle (equivalence) avg@{k} (%) on "
      f"{config.final_eval_split} per family, mean ± 95% CI over {len(per_seed)} seed(s).",
      "Paper columns: Tao et al. 2025, Qwen3-4B-Base, easy- / hard-to-verify evaluation "
      "averages (different models, data and scale: compare orderings, not values)."]
  reports = [s["rm"] for s in per_seed if s["rm"]]
  if reports:
    acc = tables.fmt(*tables.mean_ci95([r["accuracy"] for r in reports]))
    auc = tables.fmt(*tables.mean_ci95([r["auc"] for r in reports]))
    notes.append(f"Reward model ({config.reward_model.loss}) on held-out samples of the SFT "
                 f"policy: accuracy {acc}, AUC {auc}.")
  return notes


def main(argv):
  del argv
  run_all = lambda config, root: [run_seed(config, root, seed)
                                  for seed in range(config.num_seeds)]
  config, root, _ = cli.experiment_setup(_CONFIG, _WORKDIR.value, plan=run_all)
  per_seed = run_all(config, root)
  if distributed.is_main():
    print("\n\n".join(write_outputs(config, per_seed, root, root)), flush=True)


def write_outputs(config: ml_collections.ConfigDict, per_seed: list[dict], runs_root: str,
                  out_root: str, prefix: str = "hero") -> list[str]:
  """Tables under <out_root>/tables/<prefix>_*, curves under plots/; returns the markdown."""
  out = [main_table(config, per_seed, os.path.join(out_root, "tables", f"{prefix}_main"))]
  if config.hero.ablations:
    out.append(ablation_table(config, per_seed,
                              os.path.join(out_root, "tables", f"{prefix}_ablations")))
  metrics_lib.write_json(os.path.join(out_root, "tables", f"{prefix}_rm.json"),
                         [s["rm"] for s in per_seed])
  curves = {f"{arm} s{i}": metrics_lib.read_metrics(os.path.join(runs_root, f"seed{i}", "arms", arm,
                                                                "grpo", "metrics.jsonl"))
            for i in range(len(per_seed)) for arm in per_seed[i]["arms"] if arm.count("-") == 1}
  plots.plot_learning_curves(curves, ["accuracy", "reward_mean", "eval/avg@k"],
                             os.path.join(out_root, "plots", f"{prefix}_curves.png"))
  return out


if __name__ == "__main__":
  # Flags only when run as a script: experiments.quickstart imports this module.
  _CONFIG = cli.define_config("configs/hero.py:tiny")
  _WORKDIR = flags.DEFINE_string("workdir", "/tmp/hero", "Output directory.")
  cli.run(main)
