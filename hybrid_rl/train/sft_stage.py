"""SFT stage: cross-entropy on reference solutions (cold start), resumable.

Each step draws `train.batch_size` examples of `data.train_split`; the row is
prompt + " " + solution + EOS with the loss on the solution tokens. Starts
from random init (config.model) or from config.init_from.
"""
from flax import nnx
import jax
import ml_collections

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


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """SFT over the global mesh; each process tokenizes its own rows of the global batch."""
  mesh = distributed.make_mesh(config.parallel.mesh_shape)
  rollouts.check_rows_on_mesh(config.train.batch_size, mesh)
  with jax.set_mesh(mesh):
    return _run(config, workdir, mesh)


def _run(config: ml_collections.ConfigDict, workdir: str, mesh) -> dict:
  policy = stage_io.build_or_load(config, workdir, mesh=mesh)
  model, tokenizer = policy.model, policy.tokenizer
  graphdef, _ = nnx.split(model)
  examples = stage_io.load_split(config, workdir, config.data.train_split)
  optimizer = optim.make_optimizer(config.optim, config.train.steps)
  init = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(config.seed))
  init = distributed.put_global(init, steps.state_shardings(init, mesh))
  train_step = steps.jit_train_step(steps.make_train_step(
      objectives.sft_objective(graphdef, compute_dtype=config.model.compute_dtype), optimizer,
      config.train.grad_accum_steps, config.train.micro_batch_rows), init,
      mesh=mesh)

  def step_fn(state, step):
    del step
    it = pipeline.BatchIterator(examples, config.train.batch_size, seed=config.seed,
                                position=int(state["data_position"]),
                                shard_index=jax.process_index(), shard_count=jax.process_count())
    batch_examples = next(it)
    batch = batches.supervised_batch(
        tokenizer, prompts_lib.format_prompts(batch_examples, config, tokenizer),
        [" " + e["solution"] for e in batch_examples], config.data.max_prompt_len,
        config.sampling.max_new_tokens)
    batch = {k: distributed.global_rows(mesh, v) for k, v in batch.items()}
    batch = batches.trim_padding(batch, config.train.trim_multiple)
    rng, key = jax.random.split(state["rng"])
    state, metrics = train_step(state, batch, key)
    state = {**state, "rng": rng, "data_position": state["data_position"] + 1}
    return state, metrics

  state, info = loop.run(workdir, init_state=init, step_fn=step_fn, desc="sft",
                         **loop.options(config))
  stage_io.export_final(workdir, model.cfg, state["params"], policy.tokenizer_path)
  return {"stage": "sft", "steps": int(state["step"]), "final": stage_io.final_dir(workdir),
          "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
          "skipped_steps": info["skipped_steps"]}
