"""Jitted generation: one prefill, then KV-cache decode in a `lax.while_loop`.

Prompts are left-padded to a common length P, so every row's next token goes
to the same cache slot and the loop has static shapes. The prompt is
prefilled once and its cache repeated for the G samples per prompt. The loop
ends early once every row has emitted a stop token.

Logprobs are those of softmax(logits / temperature), the distribution sampled
before top-k / top-p truncation (greedy counts as temperature 1); they equal
`transformer.token_logprobs` over the same tokens with the same temperature.
"""
import dataclasses
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  max_new_tokens: int
  temperature: float = 1.0  # 0 = greedy
  top_p: float = 1.0  # 1 disables
  top_k: int = 0  # 0 disables
  num_samples: int = 1  # G responses per prompt
  stop_token_ids: tuple[int, ...] = ()
  pad_token_id: int = 0


class SampleOutput(NamedTuple):
  """Responses, row b * G + g being sample g of prompt b.

  tokens: [B*G, N] int32, pad after the end.
  logprobs: [B*G, N] float32, 0 where mask is False.
  mask: [B*G, N] bool, the response tokens (the stop token included).
  lengths: [B*G] int32, mask.sum(-1).
  finished: [B*G] bool, True if the row ended with a stop token (False: truncated).
  """
  tokens: Array
  logprobs: Array
  mask: Array
  lengths: Array
  finished: Array


def truncate_logits(logits: Array, top_k: int, top_p: float) -> Array:
  """Sets logits outside the top-k / top-p (nucleus) set to -inf. [..., V] float32."""
  neg_inf = jnp.finfo(logits.dtype).min
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # Smallest prefix whose mass reaches top_p: keep token i while the mass
    # before it is still short of top_p (the top token is always kept).
    kept = mass_before < top_p
    threshold = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, neg_inf, logits)
  return logits


def categorical(key: Array, logits: Array, block: int = 256) -> Array:
  """One index per row drawn from softmax(logits): [R, V] float32 -> [R] int32.

  Inverse-transform sampling with one uniform per row, located by a two-level
  cumulative sum (the blocks' masses, then the chosen block's tokens).
  jax.random.categorical draws Gumbel noise for every logit instead: at 128 rows
  x 49152 (SmolLM2's vocabulary) that took 290 ms against 20 ms on the 2-core
  CPU, longer than the model's own decode step. Logits of -inf (or finfo.min)
  are never drawn.
  """
  return categorical_from_uniform(jax.random.uniform(key, (logits.shape[0],)), logits, block)


def categorical_from_uniform(u: Array, logits: Array, block: int = 256) -> Array:
  """`categorical` given each row's uniform draw u: [R] in [0, 1)."""
  r, v = logits.shape
  num_blocks = -(-v // block)
  mass = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))  # unnormalized
  blocks = jnp.pad(mass, ((0, 0), (0, num_blocks * block - v))).reshape(r, num_blocks, block)
  block_mass = blocks.sum(-1)  # [R, num_blocks]
  cumulative = jnp.cumsum(block_mass, axis=-1)
  u = u * cumulative[:, -1]

  def last_positive(x):  # index of the last entry > 0 along the last axis
    return x.shape[-1] - 1 - jnp.argmax(x[..., ::-1] > 0, axis=-1)

  # Float rounding can put u at or past a total; the clamps keep the draw on mass.
  b = jnp.minimum(jnp.sum(cumulative <= u[:, None], axis=-1), last_positive(block_mass))
  take = lambda x, i: jnp.take_along_axis(x, i[:, None], axis=-1)[:, 0]
  rest = u - (take(cumulative, b) - take(block_mass, b))
  inside = jnp.take_along_axis(blocks, b[:, None, None], axis=1)[:, 0]  # [R, block]
  i = jnp.minimum(jnp.sum(jnp.cumsum(inside, axis=-1) <= rest[:, None], axis=-1),
                  last_positive(inside))
  return (b * block + i).astype(jnp.int32)


def sample_token(key: Array, logits: Array, sp: SamplingParams) -> tuple[Array, Array]:
  """Draws one token per row. logits: [R, V] float32 -> (tokens [R], logprobs [R])."""
  return sample_token_from_uniform(jax.random.uniform(key, (logits.shape[0],)), logits, sp)


def sample_token_from_uniform(u: Array, logits: Array, sp: SamplingParams
                              ) -> tuple[Array, Array]:
  """`sample_token` given each row's uniform draw u: [R] (unused when greedy)."""
  if sp.temperature == 0:
    tokens = jnp.argmax(logits, axis=-1)
    scaled = logits
  else:
    scaled = logits / sp.temperature
    tokens = categorical_from_uniform(u, truncate_logits(scaled, sp.top_k, sp.top_p))
  picked = jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0]
  return tokens.astype(jnp.int32), picked - jax.nn.logsumexp(scaled, axis=-1)


def prefill(model: transformer.Transformer, prompts: Array, prompt_valid: Array, slots: int,
            layer_params: list[dict[str, Array]]):
  """Writes the prompts' keys and values into a fresh cache of `slots` slots.

  Args:
    prompts, prompt_valid: [B, P], left-padded.
    layer_params: sharding.decode_weights of the model's layers.
  Returns:
    (next-token logits [B, V] float32, cache, kv_valid [B, S], positions [B, P]).
  """
  b, p = prompts.shape
  cache = model.init_cache(b, slots)
  cache = jax.tree.map(lambda c: sharding.constrain(c, sharding.CACHE_SPEC), cache)
  kv_valid = jnp.zeros((b, slots), bool).at[:, :p].set(prompt_valid)
  positions = transformer.positions_from_valid(prompt_valid)
  hidden, cache = model(prompts, positions, kv_valid, cache, 0, layer_params)
  return model.logits(hidden[:, -1]), cache, kv_valid, positions


def decode_step(model: transformer.Transformer, token: Array, position: Array,
                kv_valid: Array, cache, index: Array, layer_params: list[dict[str, Array]]):
  """One token a row at cache slot `index`. token, position: [R]; kv_valid: [R, S]
  (marking `index`). Returns (next-token logits [R, V] float32, cache)."""
  hidden, cache = model(token[:, None], position[:, None], kv_valid, cache, index, layer_params)
  return model.logits(hidden[:, 0]), cache


def _generate(graphdef: nnx.GraphDef, sp: SamplingParams, state: nnx.State,
              prompts: Array, prompt_valid: Array, rng: Array) -> SampleOutput:
  model = nnx.merge(graphdef, state)
  b, p = prompts.shape
  n, g = sp.max_new_tokens, sp.num_samples
  # Sliced, cast and (on an FSDP mesh) gathered once, outside the decode loop.
  layer_params = sharding.decode_weights(model.layer_params(), model.cfg.compute_dtype)
  logits, cache, kv_valid, positions = prefill(
      model, prompts, prompt_valid, transformer.decode_cache_length(p + n), layer_params)

  repeat = lambda x, axis=0: jnp.repeat(x, g, axis=axis)
  cache = jax.tree.map(lambda c: sharding.constrain(repeat(c), sharding.CACHE_SPEC), cache)
  rows = b * g
  carry = dict(
      t=jnp.zeros((), jnp.int32),
      logits=repeat(logits),
      tokens=jnp.full((rows, n), sp.pad_token_id, jnp.int32),
      logprobs=jnp.zeros((rows, n), jnp.float32),
      lengths=jnp.zeros((rows,), jnp.int32),
      done=jnp.zeros((rows,), bool),
      cache=cache,
      kv_valid=repeat(kv_valid),
      position=repeat(positions[:, -1] + 1),
      rng=rng,
  )
  stop_ids = jnp.asarray(sp.stop_token_ids or (-1,), jnp.int32)

  def cond(c):
    return (c["t"] < n) & ~jnp.all(c["done"])

  def body(c):
    t = c["t"]
    rng, key = jax.random.split(c["rng"])
    token, logprob = sample_token(key, c["logits"], sp)
    token = jnp.where(c["done"], sp.pad_token_id, token)
    logprob = jnp.where(c["done"], 0.0, logprob)
    done = c["done"] | jnp.isin(token, stop_ids)
    kv_valid = c["kv_valid"].at[:, p + t].set(True)
    logits, cache = decode_step(model, token, c["position"], kv_valid, c["cache"], p + t,
                                layer_params)
    return dict(
        t=t + 1,
        logits=logits,
        tokens=c["tokens"].at[:, t].set(token),
        logprobs=c["logprobs"].at[:, t].set(logprob),
        lengths=c["lengths"] + (~c["done"]).astype(jnp.int32),
        done=done,
        cache=cache,
        kv_valid=kv_valid,
        position=c["position"] + 1,
        rng=rng,
    )

  c = jax.lax.while_loop(cond, body, carry)
  mask = jnp.arange(n)[None, :] < c["lengths"][:, None]
  return SampleOutput(c["tokens"], c["logprobs"], mask, c["lengths"], c["done"])


# compile_pod lowers this very function for a TPU slice.
generate_jit = jax.jit(_generate, static_argnums=(0, 1))


def generate(model: transformer.Transformer, prompts: Array, prompt_valid: Array,
             rng: Array, sp: SamplingParams) -> SampleOutput:
  """Samples G responses per prompt.

  Args:
    model: the policy (its parameters may be sharded; outputs follow).
    prompts: [B, P] int32, left-padded.
    prompt_valid: [B, P] bool, False on padding.
    rng: PRNG key.
    sp: sampling parameters (static: one compilation per distinct value and
      prompt shape).
  """
  graphdef, state = nnx.split(model)
  return generate_jit(graphdef, sp, state, prompts, prompt_valid, rng)


def left_pad(sequences: list[list[int]], pad_id: int, length: int | None = None
             ) -> tuple[jax.Array, jax.Array]:
  """Host lists of token ids -> (tokens [B, P] int32, valid [B, P] bool), left-padded.

  `length` (default: the longest) lets callers bucket shapes to avoid recompiles;
  longer sequences keep their last `length` tokens.
  """
  length = length or max(len(s) for s in sequences)
  tokens = [[pad_id] * (length - len(s)) + list(s[-length:]) for s in sequences]
  valid = [[False] * (length - len(s)) + [True] * min(len(s), length) for s in sequences]
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(valid, bool)
