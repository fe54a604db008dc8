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


def sampling_params(config: ml_collections.ConfigDict, tokenizer):
  """Evaluation's sampler settings: config.eval's samples, temperature and top-p."""
  ev = config.eval
  return rollouts.sampling_params(tokenizer, config.sampling.max_new_tokens,
                                  temperature=ev.temperature, top_p=ev.top_p,
                                  num_samples=ev.num_samples)


def evaluate(model, tokenizer, examples: list[dict], config: ml_collections.ConfigDict,
             pool: verifier_pool.VerifierPool, rng: jax.Array, mesh=None) -> dict:
  """Samples config.eval.num_samples responses per example and scores them.

  mesh: the model's parameters are global arrays on it (several processes): each
  process samples and verifies its share of every eval.batch_size problems, and the
  verdicts are gathered; every process returns the whole result.
  """
  ev = config.eval
  k = ev.num_samples
  sp = sampling_params(config, tokenizer)
  share = ev.batch_size // jax.process_count() if mesh is not None else ev.batch_size
  first = jax.process_index() * share if mesh is not None else 0
  correct, strict, statuses, shown = [], [], collections.Counter(), []
  for start in range(0, len(examples), ev.batch_size):
    chunk = examples[start:start + ev.batch_size]
    # Pad the last chunk to the bucket size so shapes (and compilations) repeat.
    padded = chunk + [chunk[-1]] * (ev.batch_size - len(chunk))
    mine = padded[first:first + share]
    rng, key = jax.random.split(rng)
    rollout = rollouts.sample(model, tokenizer, prompts_lib.format_prompts(mine, config, tokenizer),
                              key, sp, config.data.max_prompt_len, mesh=mesh,
                              chunks=config.sampling.chunks)
    golds = [e["answer"] for e in mine for _ in range(k)]
    scores = scoring.verify_texts(pool, "strict", rollout.texts, golds)
    parts = distributed.gather_objects({
        "rule": scores.rule.astype(bool).tolist(), "oracle": scores.oracle.astype(bool).tolist(),
        "statuses": dict(scores.statuses), "texts": rollout.texts[::k],
        "extracted": list(scores.extracted[::k])})
    rule = np.concatenate([p["rule"] for p in parts])[: len(chunk) * k]
    oracle = np.concatenate([p["oracle"] for p in parts])[: len(chunk) * k]
    texts = [t for p in parts for t in p["texts"]]
    extracted = [x for p in parts for x in p["extracted"]]
    for p in parts:
      statuses.update(p["statuses"])
    strict.append(rule.astype(bool).reshape(len(chunk), k))
    correct.append(oracle.astype(bool).reshape(len(chunk), k))
    shown += [{"question": e["question"], "answer": e["answer"], "response": texts[i],
               "extracted": extracted[i], "correct": bool(oracle[i * k])}
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
  examples = stage_io.load_split(config, workdir, config.eval.split)[: config.eval.max_examples]
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)
  key = jax.random.PRNGKey(config.seed + 7919)
  if jax.process_count() == 1:
    policy = stage_io.build_or_load(config, workdir)
    result = evaluate(policy.model, policy.tokenizer, examples, config, pool, key)
  else:  # the model sharded over every process's devices, as the training stages hold it
    mesh = distributed.make_mesh(config.parallel.mesh_shape)
    rollouts.check_rows_on_mesh(config.eval.batch_size, mesh, config.sampling.chunks,
                                "eval.batch_size")
    with jax.set_mesh(mesh):
      policy = stage_io.build_or_load(config, workdir, mesh=mesh, frozen=True)
      result = evaluate(policy.model, policy.tokenizer, examples, config, pool, key, mesh=mesh)
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
