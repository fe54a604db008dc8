"""Sampling a rollout: prompts encoded, an engine called (config.sampling.engine:
the static sampler, in chunks, over a mesh; or continuous batching), responses
decoded.

Shapes are bucketed by config (prompt length P = data.max_prompt_len, response
length R = sampling.max_new_tokens, fixed batch sizes), so every step reuses
one compilation (the continuous engine: one per read length, `read_buckets`).
"""
import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl import errors
from hybrid_rl.models import transformer
from hybrid_rl.parallel import distributed
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import sampler

ENGINES = ("static", "continuous")


@dataclasses.dataclass
class Rollout:
  """G responses for each of B prompts; row b * G + g is sample g of prompt b."""
  prompt_tokens: jax.Array  # [B, P] int32, left-padded
  prompt_valid: jax.Array  # [B, P] bool
  out: sampler.SampleOutput  # [B*G, R]
  texts: list[str]  # B*G decoded responses
  group_size: int

  local_out: sampler.SampleOutput | None = None  # this process's rows (host); None: = out

  def tokens_generated(self) -> int:
    """Tokens generated in this process's rows."""
    return int(np.asarray((self.local_out or self.out).lengths).sum())


def pad_id(tokenizer) -> int:
  return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_prompts(tokenizer, texts: list[str], length: int) -> tuple[jax.Array, jax.Array]:
  """Left-padded [B, length] prompt tokens (longer prompts keep their last tokens)."""
  ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
  return sampler.left_pad(ids, pad_id(tokenizer), length=length)


def sampling_params(tokenizer, max_new_tokens: int, *, temperature: float, top_p: float = 1.0,
                    top_k: int = 0, num_samples: int = 1) -> sampler.SamplingParams:
  stops = tuple(sorted({t for t in (tokenizer.eos_token_id,) if t is not None}))
  return sampler.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, top_k=top_k, num_samples=num_samples,
                                stop_token_ids=stops, pad_token_id=pad_id(tokenizer))


def config_sampling_params(tokenizer, sampling) -> sampler.SamplingParams:
  """A training stage's rollout settings from its config.sampling block."""
  return sampling_params(tokenizer, sampling.max_new_tokens, temperature=sampling.temperature,
                         top_p=sampling.top_p, top_k=sampling.top_k,
                         num_samples=sampling.num_samples)


def engine_settings(sampling) -> continuous.EngineSettings:
  """The engine a stage samples with, from its config.sampling block."""
  return continuous.settings_from_config(sampling)


def decode(tokenizer, out: sampler.SampleOutput) -> list[str]:
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  return tokenizer.batch_decode([row[:n].tolist() for row, n in zip(tokens, lengths)],
                                skip_special_tokens=True)


def chunk_slices(rows: int, chunks: int) -> list[slice]:
  """`rows` split into min(chunks, rows) consecutive slices whose sizes differ by at most
  one (a batch that chunks does not divide is still sampled, in uneven slices)."""
  bounds = np.linspace(0, rows, min(chunks, rows) + 1).round().astype(int)
  return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def check_rows_on_mesh(rows: int, mesh, chunks: int = 1, field: str = "train.batch_size"
                       ) -> None:
  """Each process's share of `rows` global rows, cut into `chunks` calls (chunk_slices), is
  put together over the processes and split over the mesh's batch axes (data x fsdp):
  every call's rows must divide by them (jax raised IndivisibleError mid-step). A stage
  calls this when its mesh exists; `field` names the config field in the message."""
  split = int(np.prod([mesh.shape[a] for a in ("data", "fsdp") if a in mesh.shape]))
  processes = len({d.process_index for d in mesh.devices.flat})
  calls = [(s.stop - s.start) * processes for s in chunk_slices(rows // processes, chunks)]
  bad = [c for c in calls if c % split]
  if bad:
    chunked = f" in sampling.chunks={chunks} calls" if chunks > 1 else ""
    raise errors.ConfigError(
        f"config.{field}={rows}{chunked}: a call of {bad[0]} prompts cannot be split over "
        f"the mesh's data x fsdp = {split} devices; use a multiple of {split * chunks}")


def generate_chunked(model: transformer.Transformer, prompt_tokens: jax.Array,
                     prompt_valid: jax.Array, rng: jax.Array, sp: sampler.SamplingParams,
                     chunks: int = 1) -> sampler.SampleOutput:
  """sampler.generate over `chunks` slices of the prompts (chunk_slices; bounds the KV
  cache to about B * G / chunks rows); chunk i uses fold_in(rng, i)."""
  if chunks == 1:
    return sampler.generate(model, prompt_tokens, prompt_valid, rng, sp)
  outs = [sampler.generate(model, prompt_tokens[rows], prompt_valid[rows],
                           jax.random.fold_in(rng, i), sp)
          for i, rows in enumerate(chunk_slices(prompt_tokens.shape[0], chunks))]
  return sampler.SampleOutput(*(jnp.concatenate(x, axis=0) for x in zip(*outs)))


def default_slots(engine: continuous.EngineSettings, rows: int, chunks: int
                  ) -> continuous.EngineSettings:
  """engine.slots, or when 0 the rows of one static chunk, ceil(rows / chunks), rounded up
  to a power of two (as the engine rounds a call's requests)."""
  if engine.slots:
    return engine
  rows_per_chunk = -(-rows // max(1, chunks))
  return dataclasses.replace(engine, slots=continuous.slot_count(engine, rows_per_chunk))


def generate(model: transformer.Transformer, prompt_tokens: jax.Array, prompt_valid: jax.Array,
             rng: jax.Array, sp: sampler.SamplingParams, chunks: int = 1,
             engine: continuous.EngineSettings | None = None) -> sampler.SampleOutput:
  """G responses per prompt from the engine `engine` names (None: static), on one
  process. Args as sampler.generate; `chunks` slices the static engine's batch, and sets
  the continuous engine's slots when engine.slots is 0 (the same rows of cache)."""
  if engine is not None and engine.engine == "continuous":
    out = continuous.generate(model, prompt_tokens, prompt_valid, rng, sp,
                              default_slots(engine, prompt_tokens.shape[0] * sp.num_samples,
                                            chunks))
    return sampler.SampleOutput(*(jnp.asarray(x) for x in out))
  return generate_chunked(model, prompt_tokens, prompt_valid, rng, sp, chunks)


def _host_local_generate(model: transformer.Transformer, mesh, prompt_tokens, prompt_valid,
                         rng: jax.Array, sp: sampler.SamplingParams,
                         settings: continuous.EngineSettings) -> sampler.SampleOutput:
  """The continuous engine over several processes: its scheduler is host-side, so each
  process samples its own rows with a replica of the policy over its own devices (fsdp
  over them, as Reinforce-Ada's rounds do), its requests keyed by their global rows (on a
  mesh in process order, as distributed.global_rows lays rows out): the draws of one
  process sampling the whole batch."""
  graphdef, params = nnx.split(model)
  local_params, local_mesh = distributed.local_replica(params, mesh)
  host_rng = distributed.host_copy(rng)
  first_request = jax.process_index() * prompt_tokens.shape[0] * sp.num_samples
  with jax.set_mesh(local_mesh):
    return continuous.generate(nnx.merge(graphdef, local_params), prompt_tokens, prompt_valid,
                               jnp.asarray(host_rng), sp, settings, first_request=first_request)


def sample(model: transformer.Transformer, tokenizer, prompt_texts: list[str], rng: jax.Array,
           sp: sampler.SamplingParams, prompt_len: int, mesh=None, chunks: int = 1,
           engine: continuous.EngineSettings | None = None) -> Rollout:
  """Samples G responses for each prompt with `engine` (None: the static sampler in
  `chunks` sequential generate calls).

  With a mesh, prompt_texts are this process's rows of a global batch: the
  arrays of the Rollout are global (rows of every process), its texts are this
  process's B * G responses. The continuous engine's scheduler is host-side: over
  several processes each samples its own rows on its own devices (_host_local_generate).
  """
  prompt_tokens, prompt_valid = encode_prompts(tokenizer, prompt_texts, prompt_len)
  if mesh is None:
    out = generate(model, prompt_tokens, prompt_valid, rng, sp, chunks, engine)
    return Rollout(prompt_tokens, prompt_valid, out, decode(tokenizer, out), sp.num_samples)
  global_tokens = distributed.global_rows(mesh, prompt_tokens)
  global_valid = distributed.global_rows(mesh, prompt_valid)
  processes = len({d.process_index for d in mesh.devices.flat})
  if engine is not None and engine.engine == "continuous":
    settings = default_slots(engine, prompt_tokens.shape[0] * sp.num_samples, chunks)
    if processes == 1:
      local = continuous.generate(model, prompt_tokens, prompt_valid, rng, sp, settings)
    else:
      local = _host_local_generate(model, mesh, prompt_tokens, prompt_valid, rng, sp, settings)
    out = sampler.SampleOutput(*(distributed.global_rows(mesh, x) for x in local))
  elif chunks == 1:
    out = sampler.generate(model, global_tokens, global_valid, rng, sp)
    local = sampler.SampleOutput(*(distributed.local_rows(mesh, x) for x in out))
  else:
    # Chunks are slices of every process's rows, so each generate call stays balanced.
    parts = []
    for i, rows in enumerate(chunk_slices(len(prompt_texts), chunks)):
      part = sampler.generate(model, distributed.global_rows(mesh, prompt_tokens[rows]),
                              distributed.global_rows(mesh, prompt_valid[rows]),
                              jax.random.fold_in(rng, i), sp)
      parts.append([distributed.local_rows(mesh, x) for x in part])
    local = sampler.SampleOutput(*(np.concatenate(x, axis=0) for x in zip(*parts)))
    out = sampler.SampleOutput(*(distributed.global_rows(mesh, x) for x in local))
  return Rollout(global_tokens, global_valid, out, decode(tokenizer, local), sp.num_samples, local)
