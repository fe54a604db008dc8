r"""GRPO on a pretrained checkpoint, measured on held-out problems before and after,
exported to Hugging Face format and checked under transformers.

  python -m experiments.pretrained_grpo --config=configs/smollm2_onestep.py:cpu \
      --workdir=/tmp/smollm2_onestep

Stages (each reused when finished; a killed run resumes where it stopped):
  before/greedy, before/sampled  the eval stage on config.eval.split (every problem
                                 greedy, and config.pretrained.sampled_k samples at T=1)
                                 of config.init_from;
  grpo                           the config's GRPO stage from config.init_from;
  after/greedy, after/sampled    the same evaluations of the GRPO policy;
  hf/                            the policy exported (stage_io.export_hf);
  transformers/                  greedy accuracy of hf/ under transformers' generate on
                                 the same problems, compared problem by problem with
                                 after/greedy (needs PyTorch; skipped with a line without it).
Writes <workdir>/summary.json (before / after greedy accuracy with the paired 95%
bootstrap interval over problems, the same for the sampled avg@k, the transformers
round trip, the train-reward curve, minutes), report.md, and plots/train_reward.png.
"""
import datetime
import importlib.util
import json
import os
import time

from absl import flags
import jax
import ml_collections
import numpy as np

from hybrid_rl import cli
from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.eval import paired
from hybrid_rl.eval import plots
from hybrid_rl.eval import throughput
from hybrid_rl.eval import transformers_reference
from hybrid_rl.parallel import distributed
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_io
from hybrid_rl.train import stage_runs

_CONFIG = cli.define_config("configs/smollm2_onestep.py:cpu")
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory.", required=True)
_TRANSFORMERS = flags.DEFINE_bool("transformers", True,
                                  "Check the exported policy under transformers (PyTorch).")


def eval_overrides(config: ml_collections.ConfigDict, sampled: bool) -> dict:
  """The held-out evaluation: greedy (config.eval) or config.pretrained.sampled_k at T=1."""
  out = {"stage": "eval"}
  if sampled:
    out.update({"eval.num_samples": config.pretrained.sampled_k, "eval.temperature": 1.0})
  return out


def task_name(config: ml_collections.ConfigDict) -> str:
  d = config.data
  if d.name != "synthetic_math":
    return f"{d.name} {config.eval.split}"
  s = d.synthetic
  return (f"synthetic_math {s.families} (level <= {s.max_level}, operand_scale {s.operand_scale}, "
          f"chain_ops {s.chain_ops}) {config.eval.split}")


def transformers_round_trip(config: ml_collections.ConfigDict, root: str, hf_dir: str,
                            ours: dict) -> dict | None:
  """Greedy accuracy of hf_dir under transformers' generate on the problems of `ours`
  (our greedy eval.json), problem by problem; cached in <root>/transformers/."""
  out_path = os.path.join(root, "transformers", "eval_transformers.json")
  if os.path.exists(out_path):
    with open(out_path) as f:
      return json.load(f)
  if importlib.util.find_spec("torch") is None:
    print("transformers round trip skipped: PyTorch is not installed "
          "(pip install torch==2.13.0)", flush=True)
    return None
  print(f"== transformers greedy evaluation of {hf_dir}", flush=True)
  examples = stage_io.load_split(config, root, config.eval.split)[: config.eval.max_examples]
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  texts = transformers_reference.greedy_texts(
      hf_dir, prompts_lib.format_prompts(examples, config, tokenizer),
      config.sampling.max_new_tokens, config.eval.batch_size)
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)
  correct = [int(v.correct) for v in pool.verify("equivalence", texts,
                                                  [e["answer"] for e in examples])]
  ours_correct = [int(c > 0) for c in ours["correct_per_example"]]
  # eval.json keeps our first few responses: the same text is a stronger check than
  # the same verdict (a random model's verdicts all agree at 0).
  shown = [e["response"] for e in ours["examples"]]
  result = {"hf_dir": hf_dir, "n": len(correct), "accuracy": float(np.mean(correct)),
            "correct_per_example": correct,
            "problems_disagreeing": int(sum(a != b for a, b in zip(ours_correct, correct))),
            "first_responses_identical": f"{sum(a == b for a, b in zip(shown, texts))}/{len(shown)}",
            "disagreeing_examples": [
                {"question": e["question"], "response": t, "ours_correct": a}
                for e, t, a, b in zip(examples, texts, ours_correct, correct) if a != b][:5]}
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  with open(out_path, "w") as f:
    json.dump(result, f, indent=2)
  return result


def per_kind(examples: list[dict], before: dict, after: dict) -> dict:
  """{kind: (n, before %, after %)} of a greedy evaluation pair."""
  out = {}
  for kind in sorted({e["kind"] for e in examples}):
    rows = [i for i, e in enumerate(examples) if e["kind"] == kind]
    acc = lambda r: 100 * float(np.mean([r["correct_per_example"][i] > 0 for i in rows]))
    out[kind] = (len(rows), acc(before), acc(after))
  return out


def summarize(config: ml_collections.ConfigDict, root: str, evals: dict, grpo: dict,
              hf: dict | None, minutes: dict, peak: float) -> dict:
  """summary.json: the greedy gain with its interval, the sampled one, the round trip."""
  greedy = [np.asarray(evals[w, "greedy"]["correct_per_example"]) > 0 for w in ("before", "after")]
  k = config.pretrained.sampled_k
  sampled = [np.asarray(evals[w, "sampled"]["correct_per_example"]) / k
             for w in ("before", "after")]
  greedy_diff = paired.problem_difference(*greedy, resamples=config.pretrained.bootstrap,
                                          seed=config.seed)
  sampled_diff = paired.problem_difference(*sampled, resamples=config.pretrained.bootstrap,
                                           seed=config.seed)
  rows = metrics_lib.read_metrics(os.path.join(root, "grpo", "metrics.jsonl"))
  pct = lambda x: round(100 * float(np.mean(x)), 2)
  return {
      "task": task_name(config), "model": config.init_from, "n": int(greedy[0].size),
      "metric": "greedy accuracy (%)",
      "before": pct(greedy[0]), "after": pct(greedy[1]),
      "ci_low": round(greedy_diff["ci_low"], 2), "ci_high": round(greedy_diff["ci_high"], 2),
      "gain": round(greedy_diff["mean"], 2),
      "improved": greedy_diff["improved"], "regressed": greedy_diff["regressed"],
      "mcnemar_p": greedy_diff["mcnemar_p"],
      "sampled": {"k": k, "temperature": 1.0,
                  "before": pct(sampled[0]), "after": pct(sampled[1]),
                  "gain": round(sampled_diff["mean"], 2),
                  "ci_low": round(sampled_diff["ci_low"], 2),
                  "ci_high": round(sampled_diff["ci_high"], 2),
                  "pass_before": round(100 * evals["before", "sampled"]["overall"]["pass@k"], 2),
                  "pass_after": round(100 * evals["after", "sampled"]["overall"]["pass@k"], 2)},
      "transformers_after": None if hf is None else round(100 * hf["accuracy"], 2),
      "transformers_problems_disagreeing": None if hf is None else hf["problems_disagreeing"],
      "transformers_first_responses_identical": None if hf is None else hf[
          "first_responses_identical"],
      "grpo": {"steps": grpo["steps"], "prompts_per_step": config.train.batch_size,
               "samples_per_prompt": config.sampling.num_samples,
               "learning_rate": config.optim.learning_rate,
               "max_new_tokens": config.sampling.max_new_tokens,
               "seconds_per_step": round(float(np.median(
                   [r["seconds_rollout_and_update"] for r in rows])), 1) if rows else None},
      "train_reward": [round(r["reward_mean"], 4) for r in rows],
      # The GRPO steps' own wall time, summed from metrics.jsonl: right for a resumed run too.
      "minutes": round(sum(r["seconds_per_step"] for r in rows) / 60, 1),
      "minutes_all_stages": round(sum(minutes.values()), 1),
      "jax_matmul_peak_gflops": round(peak / 1e9, 1),
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "date": datetime.date.today().isoformat(),
  }


def report(summary: dict, kinds: dict) -> str:
  s, sm = summary, summary["sampled"]
  ci = lambda d: f"{d['gain']:+.1f} [{d['ci_low']:+.1f}, {d['ci_high']:+.1f}]"
  lines = [
      f"### GRPO on a pretrained model: {s['model']}", "",
      f"Task: {s['task']}, {s['n']} held-out problems. GRPO: {s['grpo']['steps']} steps x "
      f"{s['grpo']['prompts_per_step']} prompts x {s['grpo']['samples_per_prompt']} samples, "
      f"lr {s['grpo']['learning_rate']}, {s['minutes']} min "
      f"({s['grpo']['seconds_per_step']} s/step; {s['devices']}, JAX float32 matmul peak "
      f"{s['jax_matmul_peak_gflops']} GFLOP/s). Intervals: paired 95% bootstrap over problems.",
      "",
      "| metric | before | after | after - before [95% CI] |", "|---|---|---|---|",
      f"| greedy accuracy (%) | {s['before']:.1f} | {s['after']:.1f} | {ci(s)} |",
      f"| avg@{sm['k']} at T=1 (%) | {sm['before']:.1f} | {sm['after']:.1f} | {ci(sm)} |",
      f"| pass@{sm['k']} at T=1 (%) | {sm['pass_before']:.1f} | {sm['pass_after']:.1f} | |",
  ]
  if s["transformers_after"] is not None:
    lines.append(f"| greedy accuracy under transformers (%) | | {s['transformers_after']:.1f} | "
                 f"{s['transformers_problems_disagreeing']} problem(s) judged differently; first "
                 f"responses identical: {s['transformers_first_responses_identical']} |")
  lines += ["", f"Greedy flips: {s['improved']} problems right only after, {s['regressed']} "
            f"only before (exact McNemar p = {s['mcnemar_p']:.2g}).", "",
            "| kind | n | greedy before (%) | greedy after (%) |", "|---|---|---|---|"]
  lines += [f"| {kind} | {n} | {b:.1f} | {a:.1f} |" for kind, (n, b, a) in kinds.items()]
  return "\n".join(lines) + "\n"


def machine_peak(root: str) -> float:
  """The float32 matmul peak (FLOP/s) measured when this workdir's first call started,
  so that a resumed or reused run reports the machine its stages ran on."""
  path = os.path.join(root, "machine.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)["matmul_peak_flops"]
  peak = throughput.measure_matmul_peak()
  if distributed.is_main():
    with open(path, "w") as f:
      json.dump({"matmul_peak_flops": peak, "devices": str(jax.devices())}, f)
  return peak


def main(argv):
  del argv
  config, root, _ = cli.experiment_setup(_CONFIG, _WORKDIR.value)
  peak = machine_peak(root)
  minutes, evals = {}, {}

  def timed(name, cfg, workdir):
    start = time.perf_counter()
    result = stage_runs.run_stage(cfg, workdir)
    ran = time.perf_counter() - start
    # A reused stage reports the wall time it took when it ran.
    minutes[name] = (result.get("wall_seconds", ran) if ran < 5 else ran) / 60
    return result

  for when, init in (("before", config.init_from), ("after", os.path.join(root, "grpo"))):
    if when == "after":
      grpo = timed("grpo", stage_runs.derive(config, {"stage": "grpo"}),
                   os.path.join(root, "grpo"))
    for kind in ("greedy", "sampled"):
      cfg = stage_runs.derive(config, {**eval_overrides(config, kind == "sampled"),
                                       "init_from": init})
      evals[when, kind] = timed(f"{when}/{kind}", cfg, os.path.join(root, when, kind))
  if not distributed.is_main():
    return
  hf_dir = os.path.join(root, "hf")
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    stage_io.export_hf(os.path.join(root, "grpo"), hf_dir)
  hf = transformers_round_trip(config, root, hf_dir, evals["after", "greedy"]) if (
      _TRANSFORMERS.value) else None
  summary = summarize(config, root, evals, grpo, hf, minutes, peak)
  examples = stage_io.load_split(config, root, config.eval.split)[: config.eval.max_examples]
  text = report(summary, per_kind(examples, evals["before", "greedy"], evals["after", "greedy"]))
  plots.plot_learning_curves({"GRPO": metrics_lib.read_metrics(os.path.join(root, "grpo",
                                                                               "metrics.jsonl"))},
                             ["reward_mean", "response_length"],
                             os.path.join(root, "plots", "train_reward.png"),
                             title=f"GRPO of {config.init_from}")
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write(text)
  print(text, flush=True)


if __name__ == "__main__":
  cli.run(main)
