"""avg@k and pass@k with the equivalence verifier (the oracle), per family and level.

For each example, k responses are sampled; with c of them correct,
  avg@k  = mean over examples of c / k
  pass@k = mean over examples of 1 - C(k - c, k) / C(k, k) = 1[c > 0]
(the unbiased estimator of Chen et al. 2021 with n = k samples).
"""
import collections
import json
import math
import os

import jax
import ml_collections
import numpy as np

from hybrid_rl.parallel import distributed
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.train import rollouts
from hybrid_rl.train import stage_io


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


def evaluate(model, tokenizer, examples: list[dict], config: ml_collections.ConfigDict,
             pool: verifier_pool.VerifierPool, rng: jax.Array) -> dict:
  """Samples config.eval.num_samples responses per example and scores them."""
  ev = config.eval
  k = ev.num_samples
  sp = rollouts.sampling_params(tokenizer, config.sampling.max_new_tokens,
                                temperature=ev.temperature, top_p=ev.top_p, num_samples=k)
  correct, strict, statuses, shown = [], [], collections.Counter(), []
  for start in range(0, len(examples), ev.batch_size):
    chunk = examples[start:start + ev.batch_size]
    # Pad the last chunk to the bucket size so shapes (and compilations) repeat.
    padded = chunk + [chunk[-1]] * (ev.batch_size - len(chunk))
    rng, key = jax.random.split(rng)
    rollout = rollouts.sample(model, tokenizer, stage_io.format_prompts(padded, config, tokenizer),
                              key, sp, config.data.max_prompt_len,
                              chunks=math.gcd(config.sampling.chunks, len(padded)))
    texts = rollout.texts[: len(chunk) * k]
    golds = [e["answer"] for e in chunk for _ in range(k)]
    verdicts = pool.verify("equivalence", texts, golds)
    statuses.update(v.status for v in verdicts)
    strict.append(np.array([v.correct for v in pool.verify("strict", texts, golds)],
                           bool).reshape(len(chunk), k))
    shown += [{"question": e["question"], "answer": e["answer"], "response": texts[i * k],
               "extracted": verdicts[i * k].extracted, "correct": verdicts[i * k].correct}
              for i, e in enumerate(chunk)][: max(0, 5 - len(shown))]
    correct.append(np.array([v.correct for v in verdicts]).reshape(len(chunk), k))
  correct = np.concatenate(correct)
  result = summarize(correct, examples, k)
  result["correct_per_example"] = correct.sum(1).tolist()  # for paired comparisons
  result["verifier_statuses"] = dict(statuses)
  result["strict_vs_oracle"] = strict_vs_oracle(np.concatenate(strict), correct, examples)
  result["examples"] = shown  # the first few responses, for reading
  return result


def to_markdown(result: dict, title: str = "") -> str:
  lines = [f"### {title}" if title else "", "",
           f"| slice | n | avg@{result['k']} | pass@{result['k']} |", "|---|---|---|---|"]
  rows = [("overall", result["overall"])]
  rows += [(f"family={k}", v) for k, v in result.get("family", {}).items()]
  rows += [(f"{k}", v) for k, v in result.get("family_level", {}).items()]
  for name, s in rows:
    lines.append(f"| {name} | {s['n']} | {s['avg@k'] * 100:.1f} | {s['pass@k'] * 100:.1f} |")
  return "\n".join(lines).strip() + "\n"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Eval stage: the model in config.init_from on config.eval.split -> eval.json, eval.md."""
  out_json = os.path.join(workdir, "eval.json")
  if os.path.exists(out_json):
    with open(out_json) as f:
      return json.load(f)
  policy = stage_io.build_or_load(config, workdir)
  examples = stage_io.load_split(config, workdir, config.eval.split)[: config.eval.max_examples]
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)
  result = evaluate(policy.model, policy.tokenizer, examples, config, pool,
                    jax.random.PRNGKey(config.seed + 7919))
  result["split"] = config.eval.split
  # Every process evaluates every example with the same key (replicated, not split:
  # evaluation sets are small); the main one writes.
  if not distributed.is_main():
    return result
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "eval.md"), "w") as f:
    f.write(to_markdown(result, f"{config.data.name} / {config.eval.split}"))
  with open(out_json + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(out_json + ".tmp", out_json)
  return result
