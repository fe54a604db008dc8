r"""Greedy accuracy of an exported checkpoint under transformers' `generate` (PyTorch).

  python -m experiments.export_hf --from=/tmp/smollm2_grpo --out=/tmp/smollm2_grpo_hf
  python -m experiments.eval_transformers --hf_dir=/tmp/smollm2_grpo_hf \
      --config=configs/smollm2_gsm8k.py:cpu --workdir=/tmp/smollm2_eval_hf \
      --compare=/tmp/smollm2_eval/eval.json

The problems, prompt format, max_new_tokens and verifier are those of the
config's eval stage (`config.eval.split`, `config.eval.max_examples`), so the
result is comparable problem by problem with our own greedy `eval.json`
(`--compare`). Writes <workdir>/eval_transformers.json. A benchmark and
round-trip check: PyTorch is never a dependency of hybrid_rl itself.
"""
import json
import os

from absl import flags
import numpy as np

from hybrid_rl import cli
from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.eval import transformers_reference
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.train import eval_stage
from hybrid_rl.train import stage_io

_CONFIG = cli.define_config("configs/smollm2_gsm8k.py:cpu")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the data lives and the result goes.",
                               required=True)
_HF_DIR = flags.DEFINE_string("hf_dir", None, "Exported checkpoint (experiments.export_hf).",
                              required=True)
_COMPARE = flags.DEFINE_string("compare", "", "Our eval.json on the same problems (greedy).")


def _greedy_eval_to_compare(path: str, settings: dict) -> list[int] | None:
  """Our eval.json's per-problem correctness (0/1), checked before any generation: a
  greedy evaluation of the same problems, prompts and token budget (eval_stage's
  comparison_settings)."""
  if not path:
    return None
  try:
    with open(path) as f:
      ours = json.load(f)
  except (OSError, ValueError) as e:
    raise SystemExit(f"FATAL: --compare={path}: not a readable eval.json ({e})") from e
  if not isinstance(ours, dict) or "correct_per_example" not in ours:
    raise SystemExit(f"FATAL: --compare={path}: not an eval.json (no correct_per_example)")
  if ours.get("k") != 1 or ours.get("settings", {}).get("temperature") not in (0, 0.0, None):
    raise SystemExit(f"FATAL: --compare={path} holds {ours.get('k')} samples per problem: "
                     "compare with a greedy eval (config.eval.num_samples=1, "
                     "config.eval.temperature=0)")
  saved = ours.get("settings")
  if saved is None:
    raise SystemExit(f"FATAL: --compare={path} does not record the settings it ran with "
                     "(an eval.json of older code): run that eval stage again")
  greedy = {**settings, "num_samples": 1, "temperature": 0.0}
  differ = [f"{k}: {saved.get(k)!r} there, {v!r} here" for k, v in greedy.items()
            if k not in ("num_samples", "temperature") and saved.get(k) != v]
  if differ:
    raise SystemExit(f"FATAL: --compare={path} evaluated other problems or prompts "
                     f"({'; '.join(differ)}): run both with the same config")
  return [int(c > 0) for c in ours["correct_per_example"]]


def _hf_dir_problem(path: str) -> str | None:
  if not os.path.isdir(path):
    return "does not exist" if not os.path.exists(path) else "is not a directory"
  if not os.path.exists(os.path.join(path, "config.json")):
    return "holds no config.json (expected a directory written by experiments.export_hf)"
  return None


def main(argv):
  del argv
  config = cli.resolved_config(_CONFIG)
  problem = _hf_dir_problem(_HF_DIR.value)
  if problem:
    raise SystemExit(f"FATAL: --hf_dir={_HF_DIR.value}: {problem}")
  workdir = _WORKDIR.value
  cli.prepare_workdir(config, workdir)
  examples = stage_io.load_split(config, workdir, config.eval.split)[: config.eval.max_examples]
  ours = _greedy_eval_to_compare(_COMPARE.value,
                                 eval_stage.comparison_settings(config, len(examples)))
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(_HF_DIR.value)
  texts = transformers_reference.greedy_texts(
      _HF_DIR.value, prompts_lib.format_prompts(examples, config, tokenizer),
      config.sampling.max_new_tokens, config.eval.batch_size)
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)
  verdicts = pool.verify("equivalence", texts, [e["answer"] for e in examples])
  correct = [int(v.correct) for v in verdicts]
  result = {"hf_dir": os.path.abspath(_HF_DIR.value), "split": config.eval.split,
            "n": len(examples), "accuracy": float(np.mean(correct)),
            "correct_per_example": correct}
  if ours is not None:
    result["ours_accuracy"] = float(np.mean(ours))
    result["problems_disagreeing"] = int(sum(a != b for a, b in zip(ours, correct)))
  with open(os.path.join(workdir, "eval_transformers.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps({k: v for k, v in result.items() if k != "correct_per_example"}))


if __name__ == "__main__":
  cli.run(main)
