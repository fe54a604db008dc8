"""Host-side glue between examples, the tokenizer, the jitted sampler and train batches.

Shapes are bucketed by config (prompt length P = data.max_prompt_len, response
length R = sampling.max_new_tokens, fixed batch sizes), so every step reuses
one compilation.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.models import transformer
from hybrid_rl.parallel import distributed
from hybrid_rl.sampling import sampler


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


def decode(tokenizer, out: sampler.SampleOutput) -> list[str]:
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  return tokenizer.batch_decode([row[:n].tolist() for row, n in zip(tokens, lengths)],
                                skip_special_tokens=True)


def generate_chunked(model: transformer.Transformer, prompt_tokens: jax.Array,
                     prompt_valid: jax.Array, rng: jax.Array, sp: sampler.SamplingParams,
                     chunks: int = 1) -> sampler.SampleOutput:
  """sampler.generate over `chunks` equal slices of the prompts (bounds the KV cache
  to B * G / chunks rows); chunk i uses fold_in(rng, i)."""
  if chunks == 1:
    return sampler.generate(model, prompt_tokens, prompt_valid, rng, sp)
  b = prompt_tokens.shape[0]
  if b % chunks:
    raise ValueError(f"{b} prompts do not split into {chunks} sampling chunks")
  size = b // chunks
  outs = [sampler.generate(model, prompt_tokens[i * size:(i + 1) * size],
                           prompt_valid[i * size:(i + 1) * size], jax.random.fold_in(rng, i), sp)
          for i in range(chunks)]
  return sampler.SampleOutput(*(jnp.concatenate(x, axis=0) for x in zip(*outs)))


def sample(model: transformer.Transformer, tokenizer, prompt_texts: list[str], rng: jax.Array,
           sp: sampler.SamplingParams, prompt_len: int, mesh=None, chunks: int = 1) -> Rollout:
  """Samples G responses for each prompt, in `chunks` sequential generate calls.

  With a mesh, prompt_texts are this process's rows of a global batch: the
  arrays of the Rollout are global (rows of every process), its texts are this
  process's B * G responses.
  """
  prompt_tokens, prompt_valid = encode_prompts(tokenizer, prompt_texts, prompt_len)
  if mesh is None:
    out = generate_chunked(model, prompt_tokens, prompt_valid, rng, sp, chunks)
    return Rollout(prompt_tokens, prompt_valid, out, decode(tokenizer, out), sp.num_samples)
  global_tokens = distributed.global_rows(mesh, prompt_tokens)
  global_valid = distributed.global_rows(mesh, prompt_valid)
  if chunks == 1:
    out = sampler.generate(model, global_tokens, global_valid, rng, sp)
    local = sampler.SampleOutput(*(distributed.local_rows(mesh, x) for x in out))
  else:
    # Chunks are slices of every process's rows, so each generate call stays balanced.
    size = len(prompt_texts) // chunks
    if len(prompt_texts) % chunks:
      raise ValueError(f"{len(prompt_texts)} prompts do not split into {chunks} sampling chunks")
    parts = []
    for i in range(chunks):
      rows = slice(i * size, (i + 1) * size)
      part = sampler.generate(model, distributed.global_rows(mesh, prompt_tokens[rows]),
                              distributed.global_rows(mesh, prompt_valid[rows]),
                              jax.random.fold_in(rng, i), sp)
      parts.append([distributed.local_rows(mesh, x) for x in part])
    local = sampler.SampleOutput(*(np.concatenate(x, axis=0) for x in zip(*parts)))
    out = sampler.SampleOutput(*(distributed.global_rows(mesh, x) for x in local))
  return Rollout(global_tokens, global_valid, out, decode(tokenizer, local), sp.num_samples, local)


def learner_temperature(sampling) -> float:
  """The temperature the learner divides logits by (config.sampling): the sampler's;
  greedy (0) counts as 1."""
  return sampling.temperature or 1.0


def sequence_batch(rollout: Rollout, *, mask_truncated: bool = False) -> dict:
  """tokens / valid [N, P+R] and response mask [N, R] for the rollout's rows."""
  g = rollout.group_size
  prompts = jnp.repeat(rollout.prompt_tokens, g, axis=0)
  prompt_valid = jnp.repeat(rollout.prompt_valid, g, axis=0)
  mask = rollout.out.mask
  if mask_truncated:
    mask = mask & rollout.out.finished[:, None]
  return {"tokens": jnp.concatenate([prompts, rollout.out.tokens], axis=1),
          "valid": jnp.concatenate([prompt_valid, rollout.out.mask], axis=1),
          "mask": mask}


@functools.partial(jax.jit, static_argnums=1)
def _columns_in_use(valid: jax.Array, prompt_len: int) -> jax.Array:
  """[2] int32: the most prompt tokens and the most response tokens of any row."""
  counts = valid.astype(jnp.int32)
  return jnp.stack([counts[:, :prompt_len].sum(1).max(), counts[:, prompt_len:].sum(1).max()])


def trim_padding(batch: dict, multiple: int) -> dict:
  """The batch without the padding columns no row uses.

  Prompts are left-padded and responses right-padded to the fixed bucket
  P + R, but a train step's cost grows with the width it is given. This drops
  the leading prompt columns and trailing response columns that are padding in
  every row (of the global batch), keeping each part a multiple of `multiple`
  (few distinct shapes, so few compilations). Positions come from `valid`, and
  every loss aggregation divides by counts that do not depend on the width
  (Dr.GRPO's by the fixed PGConfig.norm_length), so the step's results are
  unchanged up to float rounding.

  batch: "tokens" / "valid" [N, P + R]; "mask" [N, R]; any other array with
    R on axis 1 (sampler or teacher log-probs, [N, R, ...]) is cut with the
    response; the rest (advantages [N]) is kept.
  multiple: 0 keeps the batch as it is.
  """
  if multiple <= 0:
    return batch
  r = batch["mask"].shape[1]
  p = batch["tokens"].shape[1] - r
  p_used, r_used = (int(x) for x in _columns_in_use(batch["valid"], p))
  keep = lambda used, full: min(full, max(multiple, -(-used // multiple) * multiple))
  p_keep, r_keep = keep(p_used, p), keep(r_used, r)
  if (p_keep, r_keep) == (p, r):
    return batch
  out = {}
  for k, v in batch.items():
    if k in ("tokens", "valid"):
      out[k] = v[:, p - p_keep:p + r_keep]
    elif getattr(v, "ndim", 0) >= 2 and v.shape[1] == r:
      out[k] = v[:, :r_keep]
    else:
      out[k] = v
  return out


def supervised_batch(tokenizer, prompt_texts: list[str], responses: list[str], prompt_len: int,
                     response_len: int) -> dict:
  """Teacher-forcing rows: prompt (left-padded) + response + EOS (right-padded).

  Returns tokens / valid [N, P+R] and mask [N, R] over the response tokens;
  responses longer than R are cut (and then carry no EOS).
  """
  prompt_tokens, prompt_valid = encode_prompts(tokenizer, prompt_texts, prompt_len)
  ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
  pad, eos = pad_id(tokenizer), tokenizer.eos_token_id
  rows = np.full((len(ids), response_len), pad, np.int32)
  mask = np.zeros((len(ids), response_len), bool)
  for i, seq in enumerate(ids):
    seq = (list(seq) + [eos])[:response_len]
    rows[i, :len(seq)] = seq
    mask[i, :len(seq)] = True
  return {"tokens": jnp.concatenate([prompt_tokens, jnp.asarray(rows)], axis=1),
          "valid": jnp.concatenate([prompt_valid, jnp.asarray(mask)], axis=1),
          "mask": jnp.asarray(mask)}
