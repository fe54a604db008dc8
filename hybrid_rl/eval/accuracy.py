"""avg@k and pass@k with the equivalence verifier (the oracle), per family and level.

For each example, k responses are sampled; with c of them correct,
  avg@k  = mean over examples of c / k
  pass@k = mean over examples of 1 - C(k - c, k) / C(k, k) = 1[c > 0]
(the unbiased estimator of Chen et al. 2021 with n = k samples).
"""
import collections
import math

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct."""
  if n - c < k:
    return 1.0
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(correct: np.ndarray, examples: list[dict], k: int) -> dict:
  """correct: [E, n] bools -> overall and per-(family, level) avg@k / pass@k."""
  def stats(rows):
    c = correct[rows]
    return {"avg@k": float(c.mean()) if c.size else float("nan"),
            "pass@k": float(np.mean([pass_at_k(c.shape[1], int(r.sum()), k) for r in c]))
            if c.size else float("nan"),
            "n": int(len(rows))}
  groups = collections.defaultdict(list)
  for i, e in enumerate(examples):
    groups[("family", e["family"])].append(i)
    groups[("level", str(e["level"]))].append(i)
    groups[("family_level", f"{e['family']}/{e['level']}")].append(i)
  out = {"k": k, "overall": stats(list(range(len(examples))))}
  for (kind, key), rows in sorted(groups.items()):
    out.setdefault(kind, {})[key] = stats(rows)
  return out


def strict_vs_oracle(strict: np.ndarray, oracle: np.ndarray, examples: list[dict]) -> dict:
  """The strict checker judged against the oracle on the policy's own samples,
  per family: precision, recall (the share of correct answers it accepts: HERO's
  hard-to-verify premise is a low one; None without positives) and n_correct
  (oracle positives).

  strict, oracle: [E, k] bools.
  """
  out = {}
  for family in sorted({e["family"] for e in examples}):
    rows = [i for i, e in enumerate(examples) if e["family"] == family]
    s, o = strict[rows], oracle[rows]
    tp = int((s & o).sum())
    out[family] = {"precision": tp / int(s.sum()) if s.any() else None,
                   "recall": tp / int(o.sum()) if o.any() else None, "n_correct": int(o.sum())}
  return out


def to_markdown(result: dict, title: str = "") -> str:
  lines = [f"### {title}" if title else "", "",
           f"| slice | n | avg@{result['k']} | pass@{result['k']} |", "|---|---|---|---|"]
  rows = [("overall", result["overall"])]
  rows += [(f"family={k}", v) for k, v in result.get("family", {}).items()]
  rows += [(f"{k}", v) for k, v in result.get("family_level", {}).items()]
  for name, s in rows:
    lines.append(f"| {name} | {s['n']} | {s['avg@k'] * 100:.1f} | {s['pass@k'] * 100:.1f} |")
  return "\n".join(lines).strip() + "\n"
