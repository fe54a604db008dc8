"""Reward-model stage: a scalar-head model trained on the policy's own samples.

1. The policy (config.reward_model.policy_from, e.g. the SFT stage) samples
   `reward_model.samples_per_prompt` responses for each prompt of
   `reward_model.split` (a labelled split disjoint from RL and evaluation
   data); the equivalence oracle labels them.
2. Prompts are split into train / held-out (`reward_model.holdout_fraction`).
3. The reward model (config.model with num_labels = 1, from random init or
   config.init_from) is trained with `reward_model.loss`: pointwise binary
   cross-entropy, or Bradley-Terry on (correct, incorrect) pairs of a prompt.
4. Held-out accuracy (score > 0 vs label) and AUC go to <workdir>/rm_eval.json.
"""
import os

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl import errors
from hybrid_rl.eval import reward_metrics
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.sampling import rollouts
from hybrid_rl.train import batches
from hybrid_rl.train import loop
from hybrid_rl.train import objectives
from hybrid_rl.train import optim
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_io
from hybrid_rl.train import steps


def labelled_samples(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Policy samples on the RM split with oracle labels, cached in <workdir>/rm_samples.npz."""
  path = os.path.join(workdir, "rm_samples.npz")
  if os.path.exists(path):
    return dict(np.load(path))
  rm = config.reward_model
  if not rm.policy_from:
    raise errors.ConfigError("config.reward_model.policy_from='': set it to the policy whose samples "
                     "the reward model learns to judge (e.g. the SFT stage workdir)")
  policy = stage_io.build_or_load(config, workdir, init_from=rm.policy_from)
  examples = stage_io.load_split(config, workdir, rm.split)
  g = rm.samples_per_prompt
  sp = rollouts.sampling_params(policy.tokenizer, config.sampling.max_new_tokens,
                                temperature=config.sampling.temperature, num_samples=g)
  tokens, valid, labels, prompt_ids, families = [], [], [], [], []
  rng = jax.random.PRNGKey(config.seed + 31)
  batch = config.eval.batch_size
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)
  for start in range(0, len(examples), batch):
    chunk = examples[start:start + batch]
    padded = chunk + [chunk[-1]] * (batch - len(chunk))
    rng, key = jax.random.split(rng)
    rollout = rollouts.sample(policy.model, policy.tokenizer,
                              prompts_lib.format_prompts(padded, config, policy.tokenizer), key, sp,
                              config.data.max_prompt_len,
                              engine=rollouts.engine_settings(config.sampling))
    n = len(chunk) * g
    verdicts = pool.verify("equivalence", rollout.texts[:n],
                           [e["answer"] for e in chunk for _ in range(g)])
    rows = batches.sequence_batch(rollout)
    tokens.append(np.asarray(rows["tokens"][:n]))
    valid.append(np.asarray(rows["valid"][:n]))
    labels.append(np.array([v.correct for v in verdicts], np.float32))
    prompt_ids.append(np.repeat(np.arange(start, start + len(chunk)), g))
    families.append(np.repeat([e.get("family", "") for e in chunk], g))
  data = {"tokens": np.concatenate(tokens), "valid": np.concatenate(valid),
          "labels": np.concatenate(labels), "prompt": np.concatenate(prompt_ids),
          "family": np.concatenate(families)}
  os.makedirs(workdir, exist_ok=True)
  np.savez(path + ".tmp.npz", **data)
  os.replace(path + ".tmp.npz", path)
  return data


def split_by_prompt(data: dict, holdout_fraction: float, seed: int) -> tuple[dict, dict]:
  prompts = np.unique(data["prompt"])
  rng = np.random.default_rng(seed)
  held = set(rng.choice(prompts, max(1, int(len(prompts) * holdout_fraction)), replace=False))
  mask = np.array([p in held for p in data["prompt"]])
  return ({k: v[~mask] for k, v in data.items()}, {k: v[mask] for k, v in data.items()})


def preference_pairs(data: dict, rng: np.random.Generator) -> np.ndarray:
  """[num_pairs, 2] row indices (correct, incorrect) within a prompt, one per correct response."""
  pairs = []
  for p in np.unique(data["prompt"]):
    rows = np.where(data["prompt"] == p)[0]
    good, bad = rows[data["labels"][rows] > 0.5], rows[data["labels"][rows] <= 0.5]
    if len(good) and len(bad):
      pairs += [(g, rng.choice(bad)) for g in good]
  return np.array(pairs, np.int64).reshape(-1, 2)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  rm = config.reward_model
  data = labelled_samples(config, workdir)
  train, held = split_by_prompt(data, rm.holdout_fraction, config.seed)
  policy = stage_io.build_or_load(config, workdir, num_labels=1)
  graphdef, _ = nnx.split(policy.model)
  optimizer = optim.make_optimizer(config.optim, config.train.steps)
  step = jax.jit(steps.make_train_step(
      objectives.reward_objective(graphdef, rm.loss, compute_dtype=config.model.compute_dtype),
      optimizer, micro_batch_rows=config.train.micro_batch_rows), donate_argnums=0)
  b = config.train.batch_size
  np_rng = np.random.default_rng(config.seed)
  pairs = preference_pairs(train, np_rng) if rm.loss == "bradley_terry" else None
  if pairs is not None and not len(pairs):
    raise ValueError("reward model: no prompt has both a correct and an incorrect sample; "
                     "use loss=pointwise or more samples_per_prompt")
  n_items = len(pairs) if pairs is not None else len(train["labels"])

  def step_fn(state, step_index):
    del step_index
    pos = int(state["data_position"])
    idx = np.random.default_rng([config.seed, pos]).integers(0, n_items, b)
    if pairs is None:
      batch = {"tokens": train["tokens"][idx], "valid": train["valid"][idx],
               "labels": train["labels"][idx]}
    else:
      c, r = pairs[idx, 0], pairs[idx, 1]
      batch = {"chosen_tokens": train["tokens"][c], "chosen_valid": train["valid"][c],
               "rejected_tokens": train["tokens"][r], "rejected_valid": train["valid"][r]}
    rng, key = jax.random.split(state["rng"])
    state, metrics = step(state, jax.tree.map(jnp.asarray, batch), key)
    return {**state, "rng": rng, "data_position": state["data_position"] + 1}, metrics

  init = steps.init_state(steps.params_of(policy.model), optimizer, jax.random.PRNGKey(config.seed))
  state, info = loop.run(workdir, init_state=init, step_fn=step_fn, desc="reward_model",
                         **loop.options(config))
  scores = objectives.score_rows(graphdef, state["params"], held["tokens"], held["valid"])
  report = reward_metrics.classification_report(scores, held["labels"])
  if "family" in held:  # samples cached before families were recorded have none
    report["family"] = {str(f): reward_metrics.classification_report(
        scores[held["family"] == f], held["labels"][held["family"] == f])
                        for f in np.unique(held["family"]) if f}
  report.update({"train_samples": int(len(train["labels"])), "loss": rm.loss,
                 "train_positive_rate": float(train["labels"].mean())})
  metrics_lib.write_json(os.path.join(workdir, "rm_eval.json"), report)
  stage_io.export_final(workdir, policy.model.cfg, state["params"], policy.tokenizer_path)
  return {"stage": "reward_model", "steps": int(state["step"]),
          "skipped_steps": info["skipped_steps"], **report}
