"""Distillation stage: the student learns from a frozen teacher on unlabelled prompts.

config.distill.rollouts picks whose samples the student trains on:
  teacher  Stage 2a (forward-KL warmup): the teacher samples; the student fits
           them by sampled-token cross-entropy (fkl_sampled, sequence-level KD)
           or by full / top-k token-level KL to the teacher on those prefixes
           (fkl_full / fkl_topk);
  student  Stage 2b (on-policy distillation): the student samples; per-token
           reward log pT - log pS on the sampled token as a policy-gradient
           advantage (opd_pg), or the full-vocabulary reverse KL (rkl_full) or
           generalized JSD(beta) (jsd) as a direct loss.
Per step: draw `train.batch_size` prompts, sample `sampling.num_samples`
responses each, run the teacher on the rows, one jitted update. Student and
teacher distributions are taken at the sampling temperature, the one the
sampler's logprobs come from. Answers are never read: the stage uses no
labels (its summary says so).
"""
import time

from flax import nnx
import jax
import ml_collections
import numpy as np

from hybrid_rl import errors
from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.data import pipeline
from hybrid_rl.parallel import distributed
from hybrid_rl.sampling import rollouts
from hybrid_rl.train import batches
from hybrid_rl.train import loop
from hybrid_rl.train import objectives
from hybrid_rl.train import optim
from hybrid_rl.train import stage_io
from hybrid_rl.train import steps

# distill.rollouts -> the losses that train on those rollouts (config_checks enforces it).
KINDS_BY_ROLLOUTS = {"teacher": ("fkl_sampled", "fkl_full", "fkl_topk"),
                     "student": ("opd_pg", "rkl_full", "jsd")}
ROLLOUT_KINDS = tuple(KINDS_BY_ROLLOUTS)
# What the loss needs from the teacher on each row.
TEACHER_OUTPUT = {"fkl_sampled": None, "fkl_full": "logits", "fkl_topk": "top_k",
                  "opd_pg": "logprobs", "rkl_full": "logits", "jsd": "logits"}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  mesh = distributed.make_mesh(config.parallel.mesh_shape)
  rollouts.check_rows_on_mesh(config.train.batch_size, mesh, config.sampling.chunks)
  with jax.set_mesh(mesh):
    return _run(config, workdir, mesh)


def _run(config: ml_collections.ConfigDict, workdir: str, mesh) -> dict:
  dcfg = config.distill
  student = stage_io.build_or_load(config, workdir, mesh=mesh)
  teacher = stage_io.build_or_load(config, workdir, init_from=dcfg.teacher_from, mesh=mesh,
                                   frozen=True)
  if len(teacher.tokenizer) != len(student.tokenizer):
    raise errors.ConfigError(f"teacher vocabulary ({len(teacher.tokenizer)}) differs from the student's "
                     f"({len(student.tokenizer)}): token-level distillation needs one vocabulary")
  tokenizer = student.tokenizer
  graphdef, _ = nnx.split(student.model)
  teacher_graphdef, _ = nnx.split(teacher.model)
  # Held in the compute dtype (every forward casts to it: the values are unchanged),
  # sharded by the partition rules.
  teacher_params = steps.cast_params(steps.params_of(teacher.model), config.model.compute_dtype)
  teacher_params = distributed.put_global(teacher_params,
                                          steps.state_shardings(teacher_params, mesh))
  examples = stage_io.load_split(config, workdir, config.data.train_split)
  optimizer = optim.make_optimizer(config.optim, config.train.steps)
  init = steps.init_state(steps.params_of(student.model), optimizer,
                          jax.random.PRNGKey(config.seed),
                          stats={"samples_total": 0.0, "tokens_total": 0.0})
  init = distributed.put_global(init, steps.state_shardings(init, mesh))
  temperature = batches.learner_temperature(config.sampling)
  train_step = steps.jit_train_step(steps.make_train_step(
      objectives.distill_objective(graphdef, dcfg.kind, jsd_beta=dcfg.jsd_beta,
                                   opd_clip_epsilon=dcfg.opd_clip_epsilon,
                                   temperature=temperature,
                                   compute_dtype=config.model.compute_dtype),
      optimizer, config.train.grad_accum_steps, config.train.micro_batch_rows), init,
      mesh=mesh)
  sp = rollouts.sampling_params(tokenizer, config.sampling.max_new_tokens,
                                temperature=config.sampling.temperature,
                                top_p=config.sampling.top_p, top_k=config.sampling.top_k,
                                num_samples=config.sampling.num_samples)
  what = TEACHER_OUTPUT[dcfg.kind]
  model_cfg, tok_path = student.model.cfg, student.tokenizer_path
  del student

  def step_fn(state, step):
    del step
    it = pipeline.BatchIterator(examples, config.train.batch_size, seed=config.seed,
                                position=int(state["data_position"]),
                                shard_index=jax.process_index(), shard_count=jax.process_count())
    prompts = prompts_lib.format_prompts(next(it), config, tokenizer)
    rng, sample_key, train_key = jax.random.split(state["rng"], 3)
    sampler_model = (nnx.merge(teacher_graphdef, teacher_params) if dcfg.rollouts == "teacher"
                     else nnx.merge(graphdef, state["params"]))
    t0 = time.perf_counter()
    rollout = rollouts.sample(sampler_model, tokenizer, prompts, sample_key, sp,
                              config.data.max_prompt_len, mesh=mesh,
                              chunks=config.sampling.chunks)
    batch = batches.sequence_batch(rollout)
    if what == "logprobs":
      batch["sampler_logprobs"] = rollout.out.logprobs
    batch = batches.trim_padding(batch, config.train.trim_multiple)
    t1 = time.perf_counter()
    if what is not None:
      out = objectives.frozen_outputs_jit(
          teacher_graphdef, teacher_params, batch["tokens"], batch["valid"],
          batch["mask"].shape[1], what=what, top_k=dcfg.top_k, temperature=temperature,
          compute_dtype=config.model.compute_dtype,
          micro_batches=objectives.frozen_micro_batches(
              batch["tokens"].shape[0], config.train.grad_accum_steps,
              config.train.micro_batch_rows))
      if what == "logprobs":
        batch["teacher_logprobs"] = out["logprobs"]
      elif what == "logits":
        batch["teacher_logits"] = out["logits"]
      else:
        batch["teacher_top_logprobs"], batch["teacher_top_ids"] = out["top_logprobs"], out["top_ids"]
    state, metrics = train_step(state, steps.place_rows(batch, mesh), train_key)
    jax.block_until_ready(state["params"])
    t2 = time.perf_counter()
    host = distributed.reduce_host_values(
        means={"response_length": rollout.local_out.lengths,
               "truncated_fraction": ~np.asarray(rollout.local_out.finished)},
        sums={"samples": len(rollout.texts), "tokens_generated": rollout.tokens_generated()})
    stats = {"samples_total": float(state["stats"]["samples_total"]) + host["samples"],
             "tokens_total": float(state["stats"]["tokens_total"]) + host["tokens_generated"]}
    state = {**state, "rng": rng, "data_position": state["data_position"] + 1,
             "stats": distributed.put_replicated(mesh, stats)}
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics.update({**host, **stats, "seconds_sampling": t1 - t0, "seconds_training": t2 - t1})
    return state, metrics

  state, info = loop.run(workdir, init_state=init, step_fn=step_fn, desc=f"distill/{dcfg.kind}",
                         **loop.options(config))
  stage_io.export_final(workdir, model_cfg, state["params"], tok_path)
  return {"stage": "distill", "kind": dcfg.kind, "rollouts": dcfg.rollouts,
          "steps": int(state["step"]), "final": stage_io.final_dir(workdir),
          "samples_total": float(state["stats"]["samples_total"]),
          "prompts_total": int(state["step"]) * config.train.batch_size,
          "labelled_prompts": 0, "skipped_steps": info["skipped_steps"]}
