"""Eval stage: samples config.eval.num_samples responses per example of
config.eval.split and scores them with the oracle (equivalence) and the strict
verifier -> eval.json, eval.md (metrics: eval/accuracy.py) and samples.jsonl (one
row per response: what two checkpoints or two samplers are compared on, response
by response).
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
  correct, strict, statuses, shown, samples = [], [], collections.Counter(), [], []
  for start in range(0, len(examples), ev.batch_size):
    chunk = examples[start:start + ev.batch_size]
    # Pad the last chunk to the bucket size so shapes (and compilations) repeat.
    padded = chunk + [chunk[-1]] * (ev.batch_size - len(chunk))
    mine = padded[first:first + share]
    rng, key = jax.random.split(rng)
    prompt_texts = prompts_lib.format_prompts(mine, config, tokenizer)
    rollout = rollouts.sample(model, tokenizer, prompt_texts, key, sp,
                              config.data.max_prompt_len, mesh=mesh,
                              chunks=config.sampling.chunks,
                              engine=rollouts.engine_settings(config.sampling))
    golds = [e["answer"] for e in mine for _ in range(k)]
    scores = scoring.verify_texts(pool, "strict", rollout.texts, golds)
    parts = distributed.gather_objects({
        "rule": scores.rule.astype(bool).tolist(), "oracle": scores.oracle.astype(bool).tolist(),
        "statuses": dict(scores.statuses), "texts": list(rollout.texts),
        "extracted": list(scores.extracted), "prompts": prompt_texts,
        "lengths": np.asarray((rollout.local_out or rollout.out).lengths).tolist(),
        "finished": np.asarray((rollout.local_out or rollout.out).finished).tolist()})
    rule = np.concatenate([p["rule"] for p in parts])[: len(chunk) * k]
    oracle = np.concatenate([p["oracle"] for p in parts])[: len(chunk) * k]
    texts = [t for p in parts for t in p["texts"]]
    extracted = [x for p in parts for x in p["extracted"]]
    prompts = [t for p in parts for t in p["prompts"]]
    lengths = [n for p in parts for n in p["lengths"]]
    finished = [f for p in parts for f in p["finished"]]
    samples += [{"id": e.get("id", start + i), "sample": j, "prompt": prompts[i],
                 "response": texts[i * k + j], "gold": e["answer"],
                 "extracted": extracted[i * k + j], "strict": bool(rule[i * k + j]),
                 "oracle": bool(oracle[i * k + j]), "length": int(lengths[i * k + j]),
                 "finished": bool(finished[i * k + j])}
                for i, e in enumerate(chunk) for j in range(k)]
    for p in parts:
      statuses.update(p["statuses"])
    strict.append(rule.astype(bool).reshape(len(chunk), k))
    correct.append(oracle.astype(bool).reshape(len(chunk), k))
    shown += [{"question": e["question"], "answer": e["answer"], "response": texts[i * k],
               "extracted": extracted[i * k], "correct": bool(oracle[i * k])}
              for i, e in enumerate(chunk)][: max(0, 5 - len(shown))]
  correct = np.concatenate(correct)
  result = accuracy.summarize(correct, examples, k)
  result["correct_per_example"] = correct.sum(1).tolist()  # for paired comparisons
  result["verifier_statuses"] = dict(statuses)
  result["strict_vs_oracle"] = accuracy.strict_vs_oracle(np.concatenate(strict), correct, examples)
  result["examples"] = shown  # the first few responses, for reading
  result["samples"] = samples  # every response (run writes them to samples.jsonl)
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
  samples = result.pop("samples")
  # Every process evaluates every example with the same key (replicated, not split:
  # evaluation sets are small); the main one writes.
  if not distributed.is_main():
    return result
  os.makedirs(workdir, exist_ok=True)
  # Before eval.json: a stage with eval.json is finished, and so are its samples.
  samples_path = os.path.join(workdir, "samples.jsonl")
  with open(samples_path + ".tmp", "w") as f:
    f.writelines(json.dumps(row) + "\n" for row in samples)
  os.replace(samples_path + ".tmp", samples_path)
  with open(os.path.join(workdir, "eval.md"), "w") as f:
    f.write(accuracy.to_markdown(result, f"{config.data.name} / {config.eval.split}"))
  with open(out_json + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(out_json + ".tmp", out_json)
  return result
