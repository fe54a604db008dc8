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
# objectives.frozen_outputs' keys -> the batch fields the losses read.
TEACHER_FIELDS = {"logprobs": "teacher_logprobs", "logits": "teacher_logits",
                  "top_logprobs": "teacher_top_logprobs", "top_ids": "teacher_top_ids"}


def init_state(config: ml_collections.ConfigDict, params) -> dict:
  """The student's train state (float32 master weights, optimizer state, step, RNG,
  sample totals). compile_pod calls it under jax.eval_shape."""
  return steps.init_state(params, optim.make_optimizer(config.optim, config.train.steps),
                          jax.random.PRNGKey(config.seed),
                          stats={"samples_total": 0.0, "tokens_total": 0.0})


def make_train_step(config: ml_collections.ConfigDict, graphdef: nnx.GraphDef, state, mesh):
  """The distillation update of config.distill.kind, jitted with the partition rules'
  shardings of `state` (arrays or sharded ShapeDtypeStructs) and the state donated.
  Student and teacher distributions are at the learner's temperature."""
  dcfg = config.distill
  loss_fn = objectives.distill_objective(
      graphdef, dcfg.kind, jsd_beta=dcfg.jsd_beta, opd_clip_epsilon=dcfg.opd_clip_epsilon,
      temperature=batches.learner_temperature(config.sampling),
      compute_dtype=config.model.compute_dtype)
  return steps.jit_train_step(steps.make_train_step(
      loss_fn, optim.make_optimizer(config.optim, config.train.steps),
      config.train.grad_accum_steps, config.train.micro_batch_rows), state, mesh=mesh)


def teacher_options(config: ml_collections.ConfigDict, rows: int) -> dict | None:
  """The static options of objectives.frozen_outputs_jit for the teacher's outputs on a
  rollout batch of `rows` rows (the train step's micro-batches, one at a time), or None
  where the loss reads only the teacher's samples (fkl_sampled)."""
  what = TEACHER_OUTPUT[config.distill.kind]
  if what is None:
    return None
  return {"what": what, "top_k": config.distill.top_k,
          "temperature": batches.learner_temperature(config.sampling),
          "compute_dtype": config.model.compute_dtype,
          "micro_batches": objectives.frozen_micro_batches(
              rows, config.train.grad_accum_steps, config.train.micro_batch_rows)}


def place_frozen(params, compute_dtype: str, mesh):
  """A frozen model's parameters held in the compute dtype (every forward casts to it:
  the values are unchanged) and sharded by the partition rules."""
  params = steps.cast_params(params, compute_dtype)
  return distributed.put_global(params, steps.state_shardings(params, mesh))


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
  teacher_params = place_frozen(steps.params_of(teacher.model), config.model.compute_dtype,
                                mesh)
  examples = stage_io.load_split(config, workdir, config.data.train_split)
  init = init_state(config, steps.params_of(student.model))
  init = distributed.put_global(init, steps.state_shardings(init, mesh))
  train_step = make_train_step(config, graphdef, init, mesh)
  sp = rollouts.config_sampling_params(tokenizer, config.sampling)
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
                              chunks=config.sampling.chunks,
                              engine=rollouts.engine_settings(config.sampling))
    batch = batches.sequence_batch(rollout)
    if TEACHER_OUTPUT[dcfg.kind] == "logprobs":
      batch["sampler_logprobs"] = rollout.out.logprobs
    batch = batches.trim_padding(batch, config.train.trim_multiple)
    t1 = time.perf_counter()
    options = teacher_options(config, batch["tokens"].shape[0])
    if options is not None:
      out = objectives.frozen_outputs_jit(teacher_graphdef, teacher_params, batch["tokens"],
                                          batch["valid"], batch["mask"].shape[1], **options)
      batch.update({TEACHER_FIELDS[k]: v for k, v in out.items()})
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
