"""Train batches: rollouts and supervised rows as token / valid / mask arrays,
the policy-gradient batch, and padding columns trimmed.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.sampling import rollouts


class PGBatch(NamedTuple):
  """The rows of one policy-gradient update (a pytree: jit, slicing and sharding
  treat each field as an array split along its rows; None fields are absent).

  N rows (prompts x group size), P prompt and R response columns:
    tokens: [N, P + R] int32, prompts left-padded, responses right-padded;
    valid: [N, P + R] bool, real tokens;
    mask: [N, R] bool, response tokens that carry loss;
    advantages: [N] (or [N, R]) float32, None until computed;
    sampler_logprobs: [N, R] float32, the sampler's log-probs of its tokens;
    old_logprobs: [N, R] float32, pi_old (None: the loss's own forward, held
      constant, as with one update per batch);
    ref_logprobs: [N, R] float32, the reference policy's (None: no KL term).
  """
  tokens: jax.Array
  valid: jax.Array
  mask: jax.Array
  advantages: jax.Array | None = None
  sampler_logprobs: jax.Array | None = None
  old_logprobs: jax.Array | None = None
  ref_logprobs: jax.Array | None = None


def learner_temperature(sampling) -> float:
  """The temperature the learner divides logits by (config.sampling): the sampler's;
  greedy (0) counts as 1."""
  return sampling.temperature or 1.0


def sequence_batch(rollout: rollouts.Rollout, *, mask_truncated: bool = False) -> dict:
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


def trim_padding(batch: dict | PGBatch, multiple: int) -> dict | PGBatch:
  """The batch without the padding columns no row uses.

  Prompts are left-padded and responses right-padded to the fixed bucket
  P + R, but a train step's cost grows with the width it is given. This drops
  the leading prompt columns and trailing response columns that are padding in
  every row (of the global batch), keeping each part a multiple of `multiple`
  (few distinct shapes, so few compilations). Positions come from `valid`, and
  every loss aggregation divides by counts that do not depend on the width
  (Dr.GRPO's by the fixed PGConfig.norm_length), so the step's results are
  unchanged up to float rounding.

  batch: a dict or PGBatch with "tokens" / "valid" [N, P + R] and "mask"
    [N, R]; any other array with R on axis 1 (sampler or teacher log-probs,
    [N, R, ...]) is cut with the response; the rest (advantages [N]) is kept.
  multiple: 0 keeps the batch as it is.
  """
  if isinstance(batch, PGBatch):
    return PGBatch(**trim_padding(batch._asdict(), multiple))
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
  prompt_tokens, prompt_valid = rollouts.encode_prompts(tokenizer, prompt_texts, prompt_len)
  ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
  pad, eos = rollouts.pad_id(tokenizer), tokenizer.eos_token_id
  rows = np.full((len(ids), response_len), pad, np.int32)
  mask = np.zeros((len(ids), response_len), bool)
  for i, seq in enumerate(ids):
    seq = (list(seq) + [eos])[:response_len]
    rows[i, :len(seq)] = seq
    mask[i, :len(seq)] = True
  return {"tokens": jnp.concatenate([prompt_tokens, jnp.asarray(rows)], axis=1),
          "valid": jnp.concatenate([prompt_valid, jnp.asarray(mask)], axis=1),
          "mask": jnp.asarray(mask)}
