"""Eval stage: samples config.eval.num_samples responses per example of
config.eval.split and scores them with the oracle (equivalence) and the strict
verifier -> eval.json, eval.md (metrics: eval/accuracy.py).
"""
import collections
import json
import os

import jax
import ml_collections
import numpy as np

from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.eval import accuracy
from hybrid_rl.parallel import distributed
from hybrid_rl.rewards import scoring
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.sampling import rollouts
from hybrid_rl.train import stage_io


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
    rollout = rollouts.sample(model, tokenizer, prompts_lib.format_prompts(padded, config, tokenizer),
                              key, sp, config.data.max_prompt_len,
                              chunks=config.sampling.chunks)
    texts = rollout.texts[: len(chunk) * k]
    golds = [e["answer"] for e in chunk for _ in range(k)]
    scores = scoring.verify_texts(pool, "strict", texts, golds)
    statuses.update(scores.statuses)
    strict.append(scores.rule.astype(bool).reshape(len(chunk), k))
    correct.append(scores.oracle.astype(bool).reshape(len(chunk), k))
    shown += [{"question": e["question"], "answer": e["answer"], "response": texts[i * k],
               "extracted": scores.extracted[i * k], "correct": bool(scores.oracle[i * k])}
              for i, e in enumerate(chunk)][: max(0, 5 - len(shown))]
  correct = np.concatenate(correct)
  result = accuracy.summarize(correct, examples, k)
  result["correct_per_example"] = correct.sum(1).tolist()  # for paired comparisons
  result["verifier_statuses"] = dict(statuses)
  result["strict_vs_oracle"] = accuracy.strict_vs_oracle(np.concatenate(strict), correct, examples)
  result["examples"] = shown  # the first few responses, for reading
  return result


def comparison_settings(config: ml_collections.ConfigDict, n: int) -> dict:
  """What an evaluation's per-problem results depend on besides the model: the problems
  and how they are prompted and sampled (another evaluation compares problem by problem
  only where these agree)."""
  return {"data": config.data.name, "split": config.eval.split, "examples": n,
          "prompt_style": config.data.prompt_style, "max_prompt_len": config.data.max_prompt_len,
          "max_new_tokens": config.sampling.max_new_tokens,
          "num_samples": config.eval.num_samples, "temperature": config.eval.temperature}


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
  result["settings"] = comparison_settings(config, len(examples))
  # Every process evaluates every example with the same key (replicated, not split:
  # evaluation sets are small); the main one writes.
  if not distributed.is_main():
    return result
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "eval.md"), "w") as f:
    f.write(accuracy.to_markdown(result, f"{config.data.name} / {config.eval.split}"))
  with open(out_json + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(out_json + ".tmp", out_json)
  return result
