"""Verifier scoring of rollouts: the rule reward and the oracle verdict per response."""
import collections
import dataclasses

import numpy as np

from hybrid_rl.rewards.verifier_pool import VerifierPool


@dataclasses.dataclass
class Scores:
  rule: np.ndarray  # [N] float32 in {0, 1}: the training verifier's verdict
  oracle: np.ndarray  # [N] float32 in {0, 1}: the equivalence verifier's verdict
  statuses: collections.Counter  # verdict status -> count (both verifiers)
  extracted: list[str | None]  # [N] the answer the oracle read, None without one


def verify_texts(pool: VerifierPool, verifier: str, texts: list[str], golds: list[str]) -> Scores:
  """Rule verdicts with `verifier` (strict or equivalence) plus oracle verdicts."""
  rule = pool.verify(verifier, texts, golds)
  oracle = rule if verifier == "equivalence" else pool.verify("equivalence", texts, golds)
  statuses = collections.Counter(f"{verifier}_{v.status}" for v in rule)
  if oracle is not rule:
    statuses.update(f"equivalence_{v.status}" for v in oracle)
  return Scores(np.array([v.correct for v in rule], np.float32),
                np.array([v.correct for v in oracle], np.float32), statuses,
                [v.extracted for v in oracle])
