"""GRPO stage: sample G responses per prompt, verify, compute advantages, update.

Per step (host loop around jitted pieces):
  1. draw `train.batch_size` prompts at the state's data position;
  2. sample G = sampling.num_samples responses each (jitted KV-cache sampler),
     or, with rl.sampling = ada_pos | ada_balance, run Reinforce-Ada's rounds
     and keep balanced groups of rl.ada.n (hybrid_rl/adaptive/), whose
     advantages take the pool's mean (and std, with rl.std_mode = group);
  3. score them in the verifier pool (rule verifier: rl.verifier; the
     equivalence oracle is logged too) and, for reward modes other than
     "verifier", with the reward model in reward.rm_from; combine them
     (reward.mode: verifier | rm | naive_sum | hero, see rewards/hero.py);
     HERO's running sigma_bar lives in the state's stats;
  4. advantages from rewards (rl.std_mode), old logprobs from the learner
     (so the first epoch has ratio 1), reference logprobs when pg.kl_coef > 0;
  5. rl.epochs x rl.minibatches jitted policy-gradient updates.
Throughput (samples, tokens, seconds sampling / verifying / training; with
adaptive sampling the verifier time is inside seconds_sampling) is in every
step's metrics. Everything the next step needs lives in the state, so
a killed run resumes exactly.
"""
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_rl import config_checks
from hybrid_rl.adaptive import collect as adaptive_collect
from hybrid_rl.adaptive import successive_elimination as se
from hybrid_rl.algorithms import policy_gradient
from hybrid_rl.data import pipeline
from hybrid_rl.eval import evaluate
from hybrid_rl.parallel import distributed
from hybrid_rl.rewards import hero
from hybrid_rl.rewards import scoring
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.train import loop
from hybrid_rl.train import objectives
from hybrid_rl.train import optim
from hybrid_rl.train import rm_stage
from hybrid_rl.train import rollouts
from hybrid_rl.train import stage_io
from hybrid_rl.train import steps


def pg_config(config: ml_collections.ConfigDict) -> policy_gradient.PGConfig:
  """config.rl.pg; Dr.GRPO's constant divisor is the sampler's max_new_tokens."""
  return policy_gradient.PGConfig(**config.rl.pg.to_dict(),
                                  norm_length=config.sampling.max_new_tokens)


def reward_config(config: ml_collections.ConfigDict) -> hero.RewardConfig:
  fields = {k: v for k, v in config.reward.to_dict().items() if k != "rm_from"}
  return hero.RewardConfig(**fields)


def ada_config(config: ml_collections.ConfigDict) -> se.AdaConfig | None:
  """Reinforce-Ada settings, or None for fixed-size GRPO groups."""
  if config.rl.sampling == "fixed":
    return None
  return se.AdaConfig(mode=config.rl.sampling, **config.rl.ada.to_dict())


def eval_metrics(model, tokenizer, examples, config, pool, step: int) -> dict:
  result = evaluate.evaluate(model, tokenizer, examples, config, pool,
                             jax.random.PRNGKey(config.seed * 1000 + step))
  out = {"eval/avg@k": result["overall"]["avg@k"], "eval/pass@k": result["overall"]["pass@k"]}
  for family, s in result.get("family", {}).items():
    out[f"eval/avg@k/{family}"] = s["avg@k"]
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """GRPO over the global mesh (config.parallel.mesh_shape); with several
  processes each samples, verifies and decodes its own rows of the global batch."""
  mesh = distributed.make_mesh(config.parallel.mesh_shape)
  with jax.set_mesh(mesh):
    return _run(config, workdir, mesh)


def _run(config: ml_collections.ConfigDict, workdir: str, mesh) -> dict:
  policy = stage_io.build_or_load(config, workdir)
  model, tokenizer = policy.model, policy.tokenizer
  graphdef, _ = nnx.split(model)
  examples = stage_io.select_families(
      stage_io.load_split(config, workdir, config.data.train_split), config.data.train_families)
  if config.eval.every and jax.process_count() > 1:
    raise config_checks.ConfigError("config.eval.every > 0 with several processes: run the eval stage on the "
                     "exported checkpoint instead")
  eval_examples = (stage_io.load_split(config, workdir, config.eval.split)[: config.eval.max_examples]
                   if config.eval.every else [])
  optimizer = optim.make_optimizer(config.optim, config.train.steps)
  temperature = rollouts.learner_temperature(config.sampling)
  cfg = pg_config(config)
  init = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(config.seed),
                          stats={"samples_total": 0.0, "tokens_total": 0.0,
                                 "sigma_bar": float("nan")})
  state_sh = steps.state_shardings(init, mesh)
  init = distributed.put_global(init, state_sh)
  train_step = steps.jit_train_step(steps.make_train_step(
      objectives.grpo_objective(graphdef, cfg, temperature=temperature,
                                compute_dtype=config.model.compute_dtype),
      optimizer, config.train.grad_accum_steps), init, mesh=mesh)
  # Its own buffers: the train step donates the state's.
  ref_params = jax.tree.map(jnp.copy, init["params"]) if cfg.kl_coef else None
  nproc, pidx = jax.process_count(), jax.process_index()
  # Host-side models (Reinforce-Ada's sampler, the reward model) run on this
  # process's own devices.
  local_mesh = (mesh if nproc == 1 else
                distributed.sharding.make_mesh((-1, 1, 1), devices=jax.local_devices()))
  sp = rollouts.sampling_params(tokenizer, config.sampling.max_new_tokens,
                                temperature=config.sampling.temperature,
                                top_p=config.sampling.top_p, top_k=config.sampling.top_k,
                                num_samples=config.sampling.num_samples)
  b, g = config.train.batch_size, config.sampling.num_samples
  b_local = b // nproc  # BatchIterator checks divisibility
  reward_cfg = reward_config(config)
  ada_cfg = ada_config(config)
  if ada_cfg is not None and reward_cfg.mode != "verifier":
    raise config_checks.ConfigError(f"config.rl.sampling={config.rl.sampling!r} with reward.mode="
                     f"{reward_cfg.mode!r}: adaptive sampling uses verifier rewards only for now")
  rm_graphdef = rm_params = None
  if reward_cfg.mode != "verifier":
    rm_model, _ = stage_io.load_final(config.reward.rm_from)
    rm_graphdef, _ = nnx.split(rm_model)
    rm_params = steps.params_of(rm_model)
  model_cfg = model.cfg
  del model
  pool = verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s)

  def frozen_logprobs(params, batch):
    return objectives.frozen_outputs_jit(graphdef, params, batch["tokens"], batch["valid"],
                                         batch["mask"].shape[1],
                                         what="logprobs", temperature=temperature,
                                         compute_dtype=config.model.compute_dtype)["logprobs"]

  def step_fn(state, step):
    it = pipeline.BatchIterator(examples, b, seed=config.seed, position=int(state["data_position"]),
                                shard_index=pidx, shard_count=nproc)
    batch_examples = next(it)
    rng, sample_key, train_key = jax.random.split(state["rng"], 3)
    policy_now = nnx.merge(graphdef, state["params"])
    rows = lambda x: distributed.global_rows(mesh, x)
    prompt_texts = stage_io.format_prompts(batch_examples, config, tokenizer)
    golds = [e["answer"] for e in batch_examples]
    # Host copies: the train step donates the state's buffers.
    stats = {k: float(v) for k, v in state["stats"].items()}
    t0 = time.perf_counter()
    if ada_cfg is not None:
      # Rounds differ per prompt, so each process samples its own prompts with a
      # host-local replica of the policy (several processes) outside the global mesh.
      sampler_policy, key = policy_now, jax.random.fold_in(sample_key, pidx)
      if nproc > 1:
        host_params, host_key = distributed.host_copy((state["params"], key))
      with jax.set_mesh(local_mesh):
        if nproc > 1:  # made under the local mesh, so they live on this process's devices
          sampler_policy = nnx.merge(graphdef, jax.tree.map(jnp.asarray, host_params))
          key = jnp.asarray(host_key)
        res = adaptive_collect.collect(
            sampler_policy, tokenizer, prompt_texts, golds, pool=pool, verifier=config.rl.verifier,
            cfg=ada_cfg, sp=sp, prompt_len=config.data.max_prompt_len, rng=key,
            choice_seed=(config.seed, int(state["data_position"]), pidx),
            mask_truncated=config.rl.mask_truncated)
      t1 = t2 = time.perf_counter()
      batch = {k: rows(res[k]) for k in ("tokens", "valid", "mask", "sampler_logprobs")}
      rule, oracle = np.asarray(res["rule"]), np.asarray(res["oracle"])
      # The pool's statistics as baseline and scale (Reinforce-Ada's global statistics).
      advantages = policy_gradient.group_advantages(
          rows(rule.reshape(b_local, ada_cfg.n)), rows(np.ones((b_local, ada_cfg.n), bool)),
          std_mode=config.rl.std_mode, baseline=rows(res["baseline"]), scale=rows(res["scale"]))
      batch["advantages"] = advantages.reshape(-1)
      rewards, rm_scores, reward_metrics = rows(rule), None, {}
      host_means = {"ada_rounds_mean": res["rounds_mean"],
                    "ada_finished_fraction": res["finished_fraction"],
                    "truncated_fraction": ~res["finished"]}
      samples, tokens, statuses = res["samples"], res["tokens_generated"], res["statuses"]
      lengths = np.asarray(res["mask"]).sum(-1)
    else:
      rollout = rollouts.sample(policy_now, tokenizer, prompt_texts, sample_key, sp,
                                config.data.max_prompt_len, mesh=mesh,
                                chunks=config.sampling.chunks)
      t1 = time.perf_counter()
      scores = scoring.verify_texts(pool, config.rl.verifier, rollout.texts,
                                    [a for a in golds for _ in range(g)])
      t2 = time.perf_counter()
      batch = rollouts.sequence_batch(rollout, mask_truncated=config.rl.mask_truncated)
      rm_scores = None
      if rm_params is not None:
        tokens_local = distributed.local_rows(mesh, batch["tokens"])
        valid_local = distributed.local_rows(mesh, batch["valid"])
        with jax.set_mesh(local_mesh):
          local_scores = rm_stage.score_rows(rm_graphdef, rm_params, tokens_local, valid_local)
        rm_scores = rows(local_scores.reshape(b_local, g))
      # On global [B, G] arrays, so HERO's sigma_bar is a statistic of the global batch.
      advantages, rewards, sigma_bar, reward_metrics = hero.shaped_advantages(
          reward_cfg, rows(scores.rule.reshape(b_local, g)), rm_scores,
          rows(np.ones((b_local, g), bool)), jnp.asarray(stats["sigma_bar"], jnp.float32),
          std_mode=config.rl.std_mode)
      stats["sigma_bar"] = float(sigma_bar)
      batch["advantages"] = advantages.reshape(-1)
      batch["sampler_logprobs"] = rollout.out.logprobs
      rule, oracle, statuses = scores.rule, scores.oracle, scores.statuses
      samples, tokens = b_local * g, rollout.tokens_generated()
      lengths = rollout.local_out.lengths
      host_means = {"truncated_fraction": ~np.asarray(rollout.local_out.finished)}
    batch = rollouts.trim_padding(batch, config.train.trim_multiple)
    batch["old_logprobs"] = frozen_logprobs(state["params"], batch)
    if ref_params is not None:
      batch["ref_logprobs"] = frozen_logprobs(ref_params, batch)
    # Every host value of the step's metrics, reduced over processes at once.
    host = distributed.reduce_host_values(
        means={"rule_reward_mean": rule, "accuracy": oracle, "response_length": lengths,
               **host_means},
        sums={"samples": samples, "tokens_generated": tokens, "verifier_timeouts": sum(
            v for k, v in statuses.items() if "timeout" in k)})
    stats["samples_total"] = stats["samples_total"] + host["samples"]
    stats["tokens_total"] = stats["tokens_total"] + host["tokens_generated"]
    state, history = steps.ppo_epochs(train_step, state, batch, train_key,
                                      epochs=config.rl.epochs, minibatches=config.rl.minibatches)
    jax.block_until_ready(state["params"])
    t3 = time.perf_counter()
    state = {**state, "rng": rng, "data_position": state["data_position"] + 1,
             "stats": distributed.put_replicated(mesh, stats)}
    metrics = {k: float(np.mean([float(h[k]) for h in history])) for k in history[0]
               if k != "epoch"}
    metrics.update({k: float(v) for k, v in reward_metrics.items()})
    if rm_scores is not None:
      metrics["rm_score_mean"] = float(rm_scores.mean())
    metrics.update(host)
    metrics.update({
        "reward_mean": float(rewards.mean()),
        "zero_adv_fraction": float(jnp.mean(jnp.ptp(advantages, axis=1) == 0)),
        "samples_total": float(stats["samples_total"]), "tokens_total": float(stats["tokens_total"]),
        "seconds_sampling": t1 - t0, "seconds_verifying": t2 - t1, "seconds_training": t3 - t2,
        "seconds_rollout_and_update": t3 - t0,  # the step's cost without periodic evaluation
    })
    if eval_examples and (step % config.eval.every == 0 or step == config.train.steps):
      metrics.update(eval_metrics(nnx.merge(graphdef, state["params"]), tokenizer, eval_examples,
                                  config, pool, step))
    return state, metrics

  state, info = loop.run(workdir, init_state=init, step_fn=step_fn, desc="grpo",
                         postfix_keys=("reward_mean", "accuracy", "loss"), **loop.options(config))
  stage_io.export_final(workdir, model_cfg, state["params"], policy.tokenizer_path)
  return {"stage": "grpo", "steps": int(state["step"]), "final": stage_io.final_dir(workdir),
          "samples_total": float(state["stats"]["samples_total"]),
          "labelled_prompts": int(state["step"]) * config.train.batch_size,
          "skipped_steps": info["skipped_steps"]}
