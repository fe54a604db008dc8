r"""How the strict checker compares with the equivalence oracle, and how fast both are.

  python -m experiments.verifier_audit --data_dir=../shared/data --out=/tmp/audit.json

1. Synthetic hard family (test split generator): every equivalent written form
   of each gold answer is a correct candidate; the forms of another problem of
   the same kind with a different gold are wrong candidates. Reports the
   equivalence verifier's accuracy on these labels, and the strict verifier's
   precision / recall / accuracy against the equivalence verifier.
2. GSM8K and MATH500 reference solutions from --data_dir: how often the
   equivalence verifier judges a dataset's own solution equal to its gold.
3. Verified answers per second through the time-bounded pool.
"""
import json
import random
import time

from absl import app
from absl import flags

from hybrid_rl.data import jsonl_sources
from hybrid_rl.data import synthetic_math
from hybrid_rl.rewards.verifier_pool import VerifierPool

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Directory with gsm8k_test.jsonl and "
                                "math500_test.jsonl (skipped when unset).")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 300, "Synthetic hard problems.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Verifier processes.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 2.0, "Per-answer time bound.")
_OUT = flags.DEFINE_string("out", None, "Write the report as JSON here.")


def synthetic_candidates(num_problems: int, seed: int = 0):
  """(response, gold, is_correct) triples over the hard family."""
  problems = [p for _, p in synthetic_math.generate(
      "test", num_problems, seed=seed, fractions_by_split=synthetic_math.HASH_FRACTIONS,
      families=("hard",))]
  by_kind = {}
  for p in problems:
    by_kind.setdefault(p.kind, []).append(p)
  rng = random.Random(seed)
  out = []
  for p in problems:
    out += [(f"The answer is \\boxed{{{f}}}.", p.answer, True) for f in p.forms]
    others = [q for q in by_kind[p.kind] if q.answer != p.answer]
    if others:
      wrong = rng.choice(others)
      out += [(f"The answer is \\boxed{{{f}}}.", p.answer, False) for f in wrong.forms[:2]]
  return out


def _rates(pred: list[bool], truth: list[bool]) -> dict:
  tp = sum(p and t for p, t in zip(pred, truth))
  fp = sum(p and not t for p, t in zip(pred, truth))
  fn = sum(t and not p for p, t in zip(pred, truth))
  return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
          "accuracy": sum(p == t for p, t in zip(pred, truth)) / max(len(truth), 1),
          "n": len(truth)}


def main(argv):
  del argv
  report = {}
  with VerifierPool(_WORKERS.value, _TIMEOUT.value) as pool:
    cands = synthetic_candidates(_NUM_PROBLEMS.value)
    responses, golds, labels = map(list, zip(*cands))
    equiv = pool.verify("equivalence", responses, golds)
    strict = pool.verify("strict", responses, golds)
    eq = [v.correct for v in equiv]
    report["synthetic_hard"] = {
        "equivalence_vs_labels": _rates(eq, labels),
        "strict_vs_equivalence": _rates([v.correct for v in strict], eq),
        "strict_vs_labels": _rates([v.correct for v in strict], labels),
    }
    if _DATA_DIR.value:
      for name, file, parse in (("gsm8k_test", "gsm8k_test.jsonl", jsonl_sources.parse_gsm8k_row),
                                ("math500_test", "math500_test.jsonl", jsonl_sources.parse_math_row)):
        examples, skipped = jsonl_sources.read_jsonl(f"{_DATA_DIR.value}/{file}", parse)
        t0 = time.perf_counter()
        verdicts = pool.verify("equivalence", [e["solution"] for e in examples],
                               [e["answer"] for e in examples])
        seconds = time.perf_counter() - t0
        report[name] = {
            "agreement": sum(v.correct for v in verdicts) / len(verdicts),
            "n": len(verdicts), "skipped_rows": len(skipped),
            "statuses": {s: sum(v.status == s for v in verdicts) for s in
                         ("ok", "no_answer", "timeout", "error")},
            "answers_per_second": len(verdicts) / seconds,
            "disagreements": [(e["id"], e["answer"], v.extracted) for e, v in
                              zip(examples, verdicts) if not v.correct][:10],
        }
    numeric = [f"so the total is \\boxed{{{i * 7}}}" for i in range(3000)]
    t0 = time.perf_counter()
    pool.verify("equivalence", numeric, [str(i * 7) for i in range(3000)])
    report["numeric_answers_per_second"] = 3000 / (time.perf_counter() - t0)
  text = json.dumps(report, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
