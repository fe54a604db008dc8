"""GRPO stage: sample G responses per prompt, verify, compute advantages, update.

Per step (host loop around jitted pieces), one function per phase:
collect and score (`collect_fixed` | `collect_adaptive`, each a `Scored`) ->
`advantages` -> `update` -> `step_metrics`:
  1. draw `train.batch_size` prompts at the state's data position;
  2. sample G = sampling.num_samples responses each (jitted KV-cache sampler),
     or, with rl.sampling = ada_pos | ada_balance, run Reinforce-Ada's rounds
     and keep balanced groups of rl.ada.n (hybrid_rl/adaptive/), whose
     advantages take the pool's mean (and std, with rl.std_mode = group), or,
     with rl.sampling = dynamic, draw further batches and keep the groups whose
     final rewards differ (DAPO, adaptive/dynamic_sampling.py);
  3. score them in the verifier pool (rule verifier: rl.verifier; the
     equivalence oracle is logged too) and, for reward modes other than
     "verifier", with the reward model in reward.rm_from; combine them
     (reward.mode: verifier | rm | naive_sum | hero, see rewards/hero.py);
     HERO's running sigma_bar lives in the state's stats;
  4. advantages from rewards (rl.advantage, rl.std_mode), old logprobs from the learner
     (so the first epoch has ratio 1), reference logprobs when pg.kl_coef > 0;
  5. rl.epochs x rl.minibatches jitted policy-gradient updates.
Throughput (samples, tokens, seconds sampling / verifying / training; with
adaptive sampling the verifier time is inside seconds_sampling) is in every
step's metrics. Everything the next step needs lives in the state, so
a killed run resumes exactly.
"""
import dataclasses
import os
import time

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_rl import errors
from hybrid_rl.adaptive import collect as adaptive_collect
from hybrid_rl.adaptive import dynamic_sampling
from hybrid_rl.adaptive import successive_elimination as se
from hybrid_rl.algorithms import policy_gradient
from hybrid_rl.data import pipeline
from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.parallel import distributed
from hybrid_rl.parallel import sharding
from hybrid_rl.rewards import hero
from hybrid_rl.rewards import scoring
from hybrid_rl.rewards import verifier_pool
from hybrid_rl.sampling import rollouts
from hybrid_rl.train import batches
from hybrid_rl.train import eval_stage
from hybrid_rl.train import loop
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import objectives
from hybrid_rl.train import optim
from hybrid_rl.train import stage_io
from hybrid_rl.train import steps


def pg_config(config: ml_collections.ConfigDict) -> policy_gradient.PGConfig:
  """config.rl.pg; Dr.GRPO's constant divisor is the sampler's max_new_tokens."""
  return policy_gradient.PGConfig(**config.rl.pg.to_dict(),
                                  norm_length=config.sampling.max_new_tokens)


def reward_config(config: ml_collections.ConfigDict) -> hero.RewardConfig:
  fields = {k: v for k, v in config.reward.to_dict().items()
            if k not in ("rm_from", "rm_batch_rows")}
  return hero.RewardConfig(**fields)


def ada_config(config: ml_collections.ConfigDict) -> se.AdaConfig | None:
  """Reinforce-Ada settings, or None for fixed-size GRPO groups (dynamic sampling's too)."""
  if config.rl.sampling in ("fixed", dynamic_sampling.MODE):
    return None
  return se.AdaConfig(mode=config.rl.sampling, **config.rl.ada.to_dict())


def eval_metrics(model, tokenizer, examples, config, pool, step: int, mesh=None) -> dict:
  result = eval_stage.evaluate(model, tokenizer, examples, config, pool,
                               jax.random.PRNGKey(config.seed * 1000 + step), mesh=mesh)
  out = {"eval/avg@k": result["overall"]["avg@k"], "eval/pass@k": result["overall"]["pass@k"]}
  for family, s in result.get("family", {}).items():
    out[f"eval/avg@k/{family}"] = s["avg@k"]
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """GRPO over the global mesh (config.parallel.mesh_shape); with several
  processes each samples, verifies and decodes its own rows of the global batch."""
  mesh = distributed.make_mesh(config.parallel.mesh_shape)
  rollouts.check_rows_on_mesh(config.train.batch_size, mesh, config.sampling.chunks)
  with jax.set_mesh(mesh):
    return _run(config, workdir, mesh)


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What every step reads and none changes (built once by `_run`)."""
  config: ml_collections.ConfigDict
  graphdef: nnx.GraphDef
  tokenizer: object
  mesh: jax.sharding.Mesh
  local_mesh: jax.sharding.Mesh  # this process's devices: host-side models run here
  pool: verifier_pool.VerifierPool
  sp: object  # sampler.SamplingParams
  reward_cfg: hero.RewardConfig
  ada_cfg: se.AdaConfig | None
  rm_graphdef: nnx.GraphDef | None = None
  rm_params: dict | None = None
  ref_params: dict | None = None

  def rows(self, x):
    """This process's rows -> the global array over the mesh."""
    return distributed.global_rows(self.mesh, x)


@dataclasses.dataclass
class Scored:
  """One step's responses with their rewards, this process's rows.

  batch: tokens, valid, mask and sampler_logprobs (global arrays), advantages
    still None;
  rule, oracle: [N] rule-verifier and equivalence-oracle rewards of this
    process's N rows;
  rm_scores: [B, G] reward-model scores (global) or None;
  pool_stats: Reinforce-Ada's pool baseline and scale per prompt, or None;
  group_valid: [b, G] bool of this process's groups, False for the groups dynamic
    sampling filled in without signal (no tokens), or None (all valid);
  batches_drawn: prompt batches the step consumed (dynamic sampling: several);
  seconds: seconds_sampling and seconds_verifying (adaptive sampling verifies
    inside its rounds: all of it is sampling).
  """
  batch: batches.PGBatch
  rule: np.ndarray
  oracle: np.ndarray
  statuses: dict
  samples: int
  tokens_generated: int
  lengths: np.ndarray
  host_means: dict
  seconds: dict
  rm_scores: jax.Array | None = None
  pool_stats: dict | None = None
  group_valid: np.ndarray | None = None
  batches_drawn: int = 1


def collect_adaptive(ctx: StepContext, params, prompt_texts: list[str], golds: list[str],
                     key: jax.Array, choice_seed: tuple) -> Scored:
  """Reinforce-Ada's rounds, verifying as they go; keeps groups of rl.ada.n."""
  t0 = time.perf_counter()
  # Rounds differ per prompt, so each process samples its own prompts with a
  # host-local replica of the policy (several processes) outside the global mesh.
  key = jax.random.fold_in(key, jax.process_index())
  if jax.process_count() > 1:  # split over this process's devices (fsdp), not whole on one
    params, _ = distributed.local_replica(params, ctx.mesh)
    key = distributed.host_copy(key)
  sampler_policy = nnx.merge(ctx.graphdef, params)
  with jax.set_mesh(ctx.local_mesh):
    key = jnp.asarray(key)  # on the local mesh (a host copy) or the global one (one process)
    res = adaptive_collect.collect(
        sampler_policy, ctx.tokenizer, prompt_texts, golds, pool=ctx.pool,
        verifier=ctx.config.rl.verifier, cfg=ctx.ada_cfg, sp=ctx.sp,
        prompt_len=ctx.config.data.max_prompt_len, rng=key, choice_seed=choice_seed,
        mask_truncated=ctx.config.rl.mask_truncated,
        engine=rollouts.engine_settings(ctx.config.sampling))
  batch = batches.PGBatch(tokens=ctx.rows(res.tokens), valid=ctx.rows(res.valid),
                          mask=ctx.rows(res.mask), sampler_logprobs=ctx.rows(res.sampler_logprobs))
  return Scored(
      batch=batch, rule=res.rule, oracle=res.oracle, statuses=res.statuses, samples=res.samples,
      tokens_generated=res.tokens_generated, lengths=np.asarray(res.mask).sum(-1),
      host_means={"ada_rounds_mean": res.rounds_mean,
                  "ada_finished_fraction": res.finished_fraction,
                  "truncated_fraction": ~res.finished},
      seconds={"seconds_sampling": time.perf_counter() - t0, "seconds_verifying": 0.0},
      pool_stats={"baseline": res.baseline, "scale": res.scale})


def collect_fixed(ctx: StepContext, params, prompt_texts: list[str], golds: list[str],
                  key: jax.Array) -> Scored:
  """G = sampling.num_samples responses per prompt (the jitted sampler), with verifier
  rewards (and reward-model scores when reward.mode uses them)."""
  t0 = time.perf_counter()
  rollout = rollouts.sample(nnx.merge(ctx.graphdef, params), ctx.tokenizer, prompt_texts, key,
                            ctx.sp, ctx.config.data.max_prompt_len, mesh=ctx.mesh,
                            chunks=ctx.config.sampling.chunks,
                            engine=rollouts.engine_settings(ctx.config.sampling))
  t1 = time.perf_counter()
  g = ctx.config.sampling.num_samples
  scores = scoring.verify_texts(ctx.pool, ctx.config.rl.verifier, rollout.texts,
                                [a for a in golds for _ in range(g)])
  rows = batches.sequence_batch(rollout, mask_truncated=ctx.config.rl.mask_truncated)
  batch = batches.PGBatch(**rows, sampler_logprobs=rollout.out.logprobs)
  rm_scores = None
  if ctx.rm_params is not None:
    tokens_local = distributed.local_rows(ctx.mesh, batch.tokens)
    valid_local = distributed.local_rows(ctx.mesh, batch.valid)
    with jax.set_mesh(ctx.local_mesh):
      local_scores = objectives.score_rows(ctx.rm_graphdef, ctx.rm_params, tokens_local,
                                           valid_local, ctx.config.reward.rm_batch_rows)
    rm_scores = ctx.rows(local_scores.reshape(len(golds), g))
  return Scored(batch=batch, rule=scores.rule, oracle=scores.oracle, statuses=scores.statuses,
                samples=len(golds) * g, tokens_generated=rollout.tokens_generated(),
                lengths=rollout.local_out.lengths,
                host_means={"truncated_fraction": ~np.asarray(rollout.local_out.finished)},
                seconds={"seconds_sampling": t1 - t0,
                         "seconds_verifying": time.perf_counter() - t1},
                rm_scores=rm_scores)


def final_rewards(ctx: StepContext, scored: Scored, sigma_bar: float) -> np.ndarray:
  """[b, G] this process's final rewards (verifier, RM or HERO's shaped ones) of a scored
  batch, on the host: what dynamic sampling compares within each group."""
  g = ctx.config.sampling.num_samples
  rule = scored.rule.reshape(-1, g)
  if scored.rm_scores is None:
    return rule
  rm = distributed.local_rows(ctx.mesh, scored.rm_scores)
  _, rewards, _, _ = hero.shaped_advantages(ctx.reward_cfg, rule, rm, np.ones(rule.shape, bool),
                                            jnp.asarray(sigma_bar, jnp.float32))
  return np.asarray(rewards)


def merge_groups(ctx: StepContext, parts: list[Scored], chosen: list[tuple[int, int]],
                 informative: np.ndarray) -> Scored:
  """One Scored of the `chosen` (batch, group) pairs of `parts` (this process's groups);
  groups not `informative` keep their rows with the mask cleared and group_valid False.
  Costs (samples, tokens, seconds, verifier statuses) are every part's."""
  g = ctx.config.sampling.num_samples
  local = lambda x: distributed.local_rows(ctx.mesh, x)
  pick = lambda arrays: np.concatenate([arrays[b][k * g:(k + 1) * g] for b, k in chosen])
  fields = {f: pick([local(getattr(p.batch, f)) for p in parts])
            for f in ("tokens", "valid", "mask", "sampler_logprobs")}
  fields["mask"] = fields["mask"] & np.repeat(informative, g)[:, None]
  rm_scores = None
  if parts[0].rm_scores is not None:
    rm_local = [local(p.rm_scores) for p in parts]
    rm_scores = ctx.rows(np.stack([rm_local[b][k] for b, k in chosen]))
  statuses = {}
  for p in parts:
    for k, v in p.statuses.items():
      statuses[k] = statuses.get(k, 0) + v
  return Scored(
      batch=batches.PGBatch(**{f: ctx.rows(v) for f, v in fields.items()}),
      rule=pick([p.rule for p in parts]), oracle=pick([p.oracle for p in parts]),
      statuses=statuses, samples=sum(p.samples for p in parts),
      tokens_generated=sum(p.tokens_generated for p in parts),
      lengths=pick([p.lengths for p in parts]),
      host_means={"truncated_fraction": pick([p.host_means["truncated_fraction"]
                                              for p in parts])},
      seconds={k: sum(p.seconds[k] for p in parts) for k in parts[0].seconds},
      rm_scores=rm_scores, group_valid=np.repeat(informative[:, None], g, axis=1),
      batches_drawn=len(parts))


def collect_dynamic(ctx: StepContext, params, draw, key: jax.Array, sigma_bar: float
                    ) -> Scored:
  """DAPO's dynamic sampling: collect_fixed on one prompt batch after another (draw(k):
  the k-th batch's prompt texts and answers) until every process holds its share of
  train.batch_size groups whose final rewards differ, or rl.dynamic.max_batches were
  drawn; then the step trains on those groups (fillers where short, see
  adaptive/dynamic_sampling.py)."""
  need = ctx.config.train.batch_size // jax.process_count()
  parts, informative = [], []
  for k in range(ctx.config.rl.dynamic.max_batches):
    prompt_texts, golds = draw(k)
    parts.append(collect_fixed(ctx, params, prompt_texts, golds, jax.random.fold_in(key, k)))
    informative.append(dynamic_sampling.informative_groups(
        final_rewards(ctx, parts[-1], sigma_bar)))
    # Each generate call spans every process's devices: all stop at the same batch.
    if all(distributed.gather_objects(dynamic_sampling.enough(informative, need))):
      break
  chosen, kept = dynamic_sampling.select(informative, need)
  scored = merge_groups(ctx, parts, chosen, kept)
  scored.host_means.update({
      "dynamic_batches": float(len(parts)),
      # Groups without signal among those drawn (before filtering), and filled in.
      "dynamic_zero_adv_before": ~np.concatenate(informative),
      "dynamic_filled_fraction": ~kept})
  return scored


def advantages(ctx: StepContext, scored: Scored, sigma_bar: float
               ) -> tuple[jax.Array, jax.Array, float, dict]:
  """(advantages [B, G], rewards, HERO's new sigma_bar, reward metrics), on global arrays
  so batch statistics (HERO's sigma_bar, rl.std_mode=batch) span every process."""
  config = ctx.config
  b_local = config.train.batch_size // jax.process_count()
  if scored.pool_stats is not None:
    # The pool's statistics as baseline and scale (Reinforce-Ada's global statistics).
    n = ctx.ada_cfg.n
    adv = policy_gradient.group_advantages(
        ctx.rows(scored.rule.reshape(b_local, n)), ctx.rows(np.ones((b_local, n), bool)),
        std_mode=config.rl.std_mode, baseline=ctx.rows(scored.pool_stats["baseline"]),
        scale=ctx.rows(scored.pool_stats["scale"]))
    return adv, ctx.rows(scored.rule), sigma_bar, {}
  g = config.sampling.num_samples
  valid = np.ones((b_local, g), bool) if scored.group_valid is None else scored.group_valid
  adv, rewards, new_sigma_bar, reward_metrics = hero.shaped_advantages(
      ctx.reward_cfg, ctx.rows(scored.rule.reshape(b_local, g)), scored.rm_scores,
      ctx.rows(valid), jnp.asarray(sigma_bar, jnp.float32), std_mode=config.rl.std_mode,
      estimator=config.rl.advantage)
  return adv, rewards, float(new_sigma_bar), reward_metrics


def update(ctx: StepContext, train_step, state: dict, batch: batches.PGBatch, key: jax.Array
           ) -> tuple[dict, list[dict]]:
  """Old (and reference) logprobs, then rl.epochs x rl.minibatches updates. With one
  update per batch the loss takes pi_old from its own forward pass (grpo_objective)."""
  config = ctx.config
  batch = batches.trim_padding(batch, config.train.trim_multiple)

  options = frozen_logprobs_options(config, batch.tokens.shape[0])

  def frozen_logprobs(params):
    return objectives.frozen_outputs_jit(ctx.graphdef, params, batch.tokens, batch.valid,
                                         batch.mask.shape[1], **options)["logprobs"]
  if config.rl.epochs * config.rl.minibatches > 1:
    batch = batch._replace(old_logprobs=frozen_logprobs(state["params"]))
  if ctx.ref_params is not None:
    batch = batch._replace(ref_logprobs=frozen_logprobs(ctx.ref_params))
  batch = steps.place_rows(batch, ctx.mesh)
  state, history = steps.ppo_epochs(train_step, state, batch, key, epochs=config.rl.epochs,
                                    minibatches=config.rl.minibatches)
  jax.block_until_ready(state["params"])
  return state, history


def rollout_samples(ctx: StepContext, scored: Scored, adv: jax.Array, rewards: jax.Array,
                    step: int, count: int) -> list[dict]:
  """The first `count` of this process's responses of a step, decoded, with their
  verdicts, final reward and advantage (rows of samples.jsonl). Every process calls it
  (gathering global rows is collective)."""
  local = lambda x: distributed.local_rows(ctx.mesh, x)
  tokens, valid = local(scored.batch.tokens), local(scored.batch.valid)
  adv, rewards = local(adv).reshape(-1), local(rewards).reshape(-1)
  r = scored.batch.mask.shape[1]
  rows = []
  for i in range(min(count, len(tokens))):
    prompt, response = tokens[i, :-r][valid[i, :-r]], tokens[i, -r:][valid[i, -r:]]
    rows.append({
        "step": step, "row": i,
        "prompt": ctx.tokenizer.decode(prompt.tolist(), skip_special_tokens=True),
        "response": ctx.tokenizer.decode(response.tolist(), skip_special_tokens=True),
        "rule": float(scored.rule[i]), "oracle": float(scored.oracle[i]),
        "reward": float(rewards[i]), "advantage": float(adv[i]), "length": len(response)})
  return rows


def step_metrics(scored: Scored, adv: jax.Array, rewards: jax.Array, reward_metrics: dict,
                 history: list[dict], stats: dict, seconds: dict) -> tuple[dict, dict]:
  """(metrics, updated running totals) for one step; host values reduced over processes."""
  host = distributed.reduce_host_values(
      means={"rule_reward_mean": scored.rule, "accuracy": scored.oracle,
             "response_length": scored.lengths, **scored.host_means},
      sums={"samples": scored.samples, "tokens_generated": scored.tokens_generated,
            "verifier_timeouts": sum(v for k, v in scored.statuses.items() if "timeout" in k)})
  # Totals over every step (metrics rows exist only every log_every steps).
  stats = {**stats, "samples_total": stats["samples_total"] + host["samples"],
           "tokens_total": stats["tokens_total"] + host["tokens_generated"],
           "seconds_total": stats["seconds_total"] + seconds["seconds_rollout_and_update"]}
  metrics = {k: float(np.mean([float(h[k]) for h in history])) for k in history[0]
             if k != "epoch"}
  metrics.update({k: float(v) for k, v in reward_metrics.items()})
  if scored.rm_scores is not None:
    metrics["rm_score_mean"] = float(scored.rm_scores.mean())
  metrics.update(host)
  metrics.update({
      "reward_mean": float(rewards.mean()),
      "zero_adv_fraction": float(jnp.mean(jnp.ptp(adv, axis=1) == 0)),
      "samples_total": float(stats["samples_total"]), "tokens_total": float(stats["tokens_total"]),
      "seconds_total": float(stats["seconds_total"]), **seconds})
  return metrics, stats


def init_state(config: ml_collections.ConfigDict, params) -> dict:
  """The GRPO train state of a policy's parameters: float32 master weights, optimizer
  state, step, RNG and the running totals (HERO's sigma_bar among them). compile_pod
  calls it under jax.eval_shape."""
  return steps.init_state(params, optim.make_optimizer(config.optim, config.train.steps),
                          jax.random.PRNGKey(config.seed),
                          stats={"samples_total": 0.0, "tokens_total": 0.0,
                                 "seconds_total": 0.0, "sigma_bar": float("nan")})


def make_train_step(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, state, mesh):
  """The policy-gradient update the stage runs, jitted with the partition rules'
  shardings of `state` (arrays or sharded ShapeDtypeStructs) and the state donated."""
  loss_fn = objectives.grpo_objective(graphdef, pg_config(config),
                                     temperature=batches.learner_temperature(config.sampling),
                                     compute_dtype=config.model.compute_dtype)
  optimizer = optim.make_optimizer(config.optim, config.train.steps)
  if config.train.length_sorted:  # rollouts of mixed lengths: pay for the tokens present
    if jax.device_count() > 1:
      raise errors.ConfigError(f"config.train.length_sorted=True on {jax.device_count()} "
                               "devices: length-sorted micro-batches run on one device; set "
                               "it False to use the sharded jitted step")
    return steps.make_length_sorted_step(loss_fn, optimizer, config.train.micro_batch_rows,
                                         config.train.trim_multiple)
  return steps.jit_train_step(steps.make_train_step(
      loss_fn, optimizer, config.train.grad_accum_steps, config.train.micro_batch_rows),
      state, mesh=mesh)


def frozen_logprobs_options(config: ml_collections.ConfigDict, rows: int) -> dict:
  """The static options of objectives.frozen_outputs_jit for pi_old's and the reference's
  logprobs on a rollout batch of `rows` rows: the train step's micro-batch rows, one
  slice at a time."""
  return {"what": "logprobs", "temperature": batches.learner_temperature(config.sampling),
          "compute_dtype": config.model.compute_dtype,
          "micro_batches": objectives.frozen_micro_batches(
              rows, config.train.grad_accum_steps * config.rl.minibatches,
              config.train.micro_batch_rows)}


def reward_model_mesh(mesh):
  """Where the stage holds a reward model: with several processes, each scores its own
  rows on its own devices, fsdp over them (a data-only mesh held a whole copy on every
  chip); one process uses the whole mesh. `mesh` may hold a slice's abstract devices
  (compile_pod): process 0's are taken then."""
  processes = sorted({d.process_index for d in mesh.devices.flat})
  if len(processes) == 1:
    return mesh
  own = jax.process_index() if jax.process_index() in processes else processes[0]
  return distributed.process_mesh(mesh, own)


def frozen_on_mesh(path: str, compute_dtype: str, mesh) -> tuple[nnx.GraphDef, dict]:
  """(graphdef, params) of a frozen model (a reward model: a reward_model stage, or a
  Hugging Face *ForSequenceClassification directory) held in the compute dtype and
  placed on `mesh` by the partition rules, so that no device holds a float32 copy of the
  whole model and no call copies it from host memory."""
  with jax.set_mesh(mesh):  # a per-process mesh inside the stage's global one
    model, _ = stage_io.load_pretrained(path, dtype=compute_dtype, mesh=mesh,
                                        param_dtype=compute_dtype)
    graphdef, _ = nnx.split(model)
    params = steps.cast_params(steps.params_of(model), compute_dtype)
    return graphdef, jax.device_put(params, sharding.param_shardings(params, mesh))


def _run(config: ml_collections.ConfigDict, workdir: str, mesh) -> dict:
  policy = stage_io.build_or_load(config, workdir, mesh=mesh)
  model, tokenizer = policy.model, policy.tokenizer
  graphdef, _ = nnx.split(model)
  examples = stage_io.select_families(
      stage_io.load_split(config, workdir, config.data.train_split), config.data.train_families)
  if config.eval.every and jax.process_count() > 1:
    rollouts.check_rows_on_mesh(config.eval.batch_size, mesh, config.sampling.chunks,
                                "eval.batch_size")
  eval_examples = (stage_io.load_split(config, workdir, config.eval.split)[: config.eval.max_examples]
                   if config.eval.every else [])
  init = init_state(config, steps.params_of(model))
  init = distributed.put_global(init, steps.state_shardings(init, mesh))
  train_step = make_train_step(config, graphdef, init, mesh)
  nproc, pidx = jax.process_count(), jax.process_index()
  reward_cfg, ada_cfg = reward_config(config), ada_config(config)
  local_mesh = reward_model_mesh(mesh)
  rm_graphdef = rm_params = None
  if reward_cfg.mode != "verifier":
    rm_graphdef, rm_params = frozen_on_mesh(config.reward.rm_from, config.model.compute_dtype,
                                            local_mesh)
  ctx = StepContext(
      config=config, graphdef=graphdef, tokenizer=tokenizer, mesh=mesh, local_mesh=local_mesh,
      pool=verifier_pool.shared(config.verifier.num_workers, config.verifier.timeout_s),
      sp=rollouts.config_sampling_params(tokenizer, config.sampling),
      reward_cfg=reward_cfg, ada_cfg=ada_cfg,
      rm_graphdef=rm_graphdef, rm_params=rm_params,
      # Its own buffers (the train step donates the state's), in the compute dtype.
      ref_params=(steps.frozen_copy(init["params"], config.model.compute_dtype)
                  if config.rl.pg.kl_coef else None))
  model_cfg = model.cfg
  del model
  first_held = []  # before this run's first step no checkpoint write is in flight
  samples_path = os.path.join(workdir, "samples.jsonl")

  def step_fn(state, step):
    # The state and frozen models, between steps. While orbax writes the previous step's
    # checkpoint, its replica-parallel slices of the train state are held too (measured at
    # toy size: the state's bytes / data replicas, freed when the write completes).
    held = distributed.device_bytes()
    if not first_held and distributed.is_main() and os.path.exists(samples_path):
      metrics_lib.truncate_after(samples_path, step - 1)  # a resumed run writes them again
    first_held[:] = first_held or [held]
    def draw(k: int) -> tuple[list[str], list[str]]:
      """The prompt texts and answers of this process's rows of the step's k-th batch."""
      batch_examples = next(pipeline.BatchIterator(
          examples, config.train.batch_size, seed=config.seed,
          position=int(state["data_position"]) + k, shard_index=pidx, shard_count=nproc))
      return (prompts_lib.format_prompts(batch_examples, config, tokenizer),
              [e["answer"] for e in batch_examples])
    rng, sample_key, train_key = jax.random.split(state["rng"], 3)
    # Host copies: the train step donates the state's buffers.
    stats = {k: float(v) for k, v in state["stats"].items()}
    if ada_cfg is not None:  # verification happens inside the rounds
      scored = collect_adaptive(ctx, state["params"], *draw(0), sample_key,
                                (config.seed, int(state["data_position"]), pidx))
    elif config.rl.sampling == dynamic_sampling.MODE:
      scored = collect_dynamic(ctx, state["params"], draw, sample_key, stats["sigma_bar"])
    else:
      scored = collect_fixed(ctx, state["params"], *draw(0), sample_key)
    t0 = time.perf_counter()
    adv, rewards, stats["sigma_bar"], reward_metrics = advantages(ctx, scored, stats["sigma_bar"])
    state, history = update(ctx, train_step, state,
                            scored.batch._replace(advantages=adv.reshape(-1)), train_key)
    seconds = {**scored.seconds, "seconds_training": time.perf_counter() - t0}
    # The step's cost without periodic evaluation.
    seconds["seconds_rollout_and_update"] = sum(seconds.values())
    metrics, stats = step_metrics(scored, adv, rewards, reward_metrics, history, stats, seconds)
    every = config.log.get("samples_every", 0)
    if every and (step % every == 0 or step == 1):
      rows = rollout_samples(ctx, scored, adv, rewards, step, config.log.samples_rows)
      if distributed.is_main():
        metrics_lib.append_rows(samples_path, rows)
    # Prompt + response tokens the update trained on (the floor of its cost: 6 x params x this).
    metrics["tokens_trained"] = float(jnp.sum(scored.batch.valid))
    metrics["held_bytes_device0"] = float(held)
    state = {**state, "rng": rng,
             "data_position": state["data_position"] + scored.batches_drawn,
             "stats": distributed.put_replicated(mesh, stats)}
    if eval_examples and (step % config.eval.every == 0 or step == config.train.steps):
      metrics.update(eval_metrics(nnx.merge(graphdef, state["params"]), tokenizer, eval_examples,
                                  config, ctx.pool, step,
                                  mesh=mesh if jax.process_count() > 1 else None))
    return state, metrics

  state, info = loop.run(workdir, init_state=init, step_fn=step_fn, desc="grpo",
                         postfix_keys=("reward_mean", "accuracy", "loss"), **loop.options(config))
  stage_io.export_final(workdir, model_cfg, state["params"], policy.tokenizer_path)
  return {"stage": "grpo", "steps": int(state["step"]), "final": stage_io.final_dir(workdir),
          "samples_total": float(state["stats"]["samples_total"]),
          # Prompts drawn (dynamic sampling draws several batches a step).
          "labelled_prompts": int(state["data_position"]) * config.train.batch_size,
          "skipped_steps": info["skipped_steps"],
          "held_bytes_device0_first_step": float(first_held[0]) if first_held else None}
