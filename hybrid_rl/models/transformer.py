"""Decoder-only transformer (Llama 3 / SmolLM2, Qwen2 / Qwen2.5, Qwen3) in Flax NNX.

One file, top to bottom: config, parameters, RMSNorm, RoPE, attention with
grouped KV heads and an optional KV cache, SwiGLU MLP, and the heads (LM
logits in float32, optional scalar head for reward models).

Layer parameters are stacked along a leading [num_layers] axis. Without a KV
cache (training, scoring) the layers run under `jax.lax.scan`, so compile time
does not grow with depth. With a cache (sampling) the layers are unrolled and
each layer owns its [batch, kv_heads, slots, head_dim] k and v buffers: a
decode step writes one slot of each in place and attends to it in that layout
(`cached_attention`). A stacked [layers, batch, slots, ...] cache carried
through the scan was sliced per layer and transposed for the attention
products on every token (results/bench_decode/).

Shapes: B batch, T tokens in this call, S cache slots (keys), H hidden,
N query heads, K kv heads, D head dim, F MLP width, V vocab, L layers.
"""
import dataclasses
import math

from flax import nnx
import jax
from jax import ad_checkpoint
import jax.numpy as jnp

from hybrid_rl.models import splash_attention
from hybrid_rl.parallel import sharding

Array = jax.Array
KVCache = list[dict[str, Array]]  # per layer {"k", "v"}: [B, K, S, D]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture hyperparameters (names follow Hugging Face configs)."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  # Llama-3 style frequency scaling: {"factor", "low_freq_factor",
  # "high_freq_factor", "original_max_position_embeddings"} or None.
  rope_scaling: tuple[tuple[str, float], ...] | None = None
  rms_norm_eps: float = 1e-6
  tie_embeddings: bool = False
  qkv_bias: bool = False  # Qwen2 / Qwen2.5
  qk_norm: bool = False  # Qwen3
  max_position_embeddings: int = 4096
  num_labels: int = 0  # > 0: scalar head [H, num_labels] instead of an LM head
  dtype: str = "float32"  # activations
  param_dtype: str = "float32"
  # How, not what: these change memory and speed, never the values computed.
  remat: str = "none"  # "none" | "full" | "save_dots": rematerialize each layer's body
  attention_chunk: int = 0  # > 0: attention in query chunks, [chunk, S] scores at a time
  logits_chunk: int = 0  # > 0: training logits over the response in chunks of positions
  decode_attention: str = "auto"  # "sum" | "dot" | "auto": "sum" on CPU, "dot" elsewhere
  # Without a cache: "chunked" (attention_chunk query chunks, or whole) | "splash" (JAX's
  # splash attention kernel on TPU; Pallas' interpret mode elsewhere, for tests).
  train_attention: str = "chunked"

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r}: must be one of {', '.join(DTYPES)}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat={self.remat!r}: choose {', '.join(REMAT_POLICIES)}")
    if self.decode_attention not in DECODE_ATTENTION:
      raise ValueError(f"decode_attention={self.decode_attention!r}: choose auto, sum or dot")
    if self.train_attention not in TRAIN_ATTENTION:
      raise ValueError(f"train_attention={self.train_attention!r}: choose chunked or splash")

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def num_params(self, include_embeddings: bool = True) -> int:
    h, f, d = self.hidden_size, self.intermediate_size, self.head_dim
    attn = h * d * (2 * self.num_heads + 2 * self.num_kv_heads)
    per_layer = attn + 3 * h * f + 2 * h
    if self.qkv_bias:
      per_layer += d * (self.num_heads + 2 * self.num_kv_heads)
    if self.qk_norm:
      per_layer += 2 * d
    total = self.num_layers * per_layer + h
    if include_embeddings:
      untied_head = not self.tie_embeddings and not self.num_labels
      total += self.vocab_size * h * (2 if untied_head else 1)
    total += h * self.num_labels
    return total


# What a rematerialized layer keeps for the backward pass: "full" only its input,
# "save_dots" also the results of its matmuls without batch dimensions (the
# projections, not the attention scores).
# `linear`'s outputs carry the name "linear": its written-out VJP hides the dot from the
# dot-based policy.
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "save_dots": jax.checkpoint_policies.save_from_both_policies(
                      jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                      jax.checkpoint_policies.save_only_these_names("linear"))}
DECODE_ATTENTION = ("auto", "sum", "dot")
TRAIN_ATTENTION = ("chunked", "splash")
DTYPES = ("float32", "bfloat16")  # parameters and activations
RUNTIME_FIELDS = ("remat", "attention_chunk", "logits_chunk", "decode_attention",
                  "train_attention")


def _init(rngs: nnx.Rngs, shape, fan_in: int, dtype) -> nnx.Param:
  std = 1.0 / math.sqrt(fan_in)
  return nnx.Param(jax.random.truncated_normal(rngs.params(), -2, 2, shape, jnp.float32)
                   .astype(dtype) * std)


class Layers(nnx.Module):
  """All decoder layers' parameters, stacked along a leading [L] axis."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    l, h, f = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size
    n, k, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    dt = jnp.dtype(cfg.param_dtype)
    self.attn_norm = nnx.Param(jnp.ones((l, h), dt))
    self.q = _init(rngs, (l, h, n * d), h, dt)
    self.k = _init(rngs, (l, h, k * d), h, dt)
    self.v = _init(rngs, (l, h, k * d), h, dt)
    self.o = _init(rngs, (l, n * d, h), n * d, dt)
    if cfg.qkv_bias:
      self.q_bias = nnx.Param(jnp.zeros((l, n * d), dt))
      self.k_bias = nnx.Param(jnp.zeros((l, k * d), dt))
      self.v_bias = nnx.Param(jnp.zeros((l, k * d), dt))
    if cfg.qk_norm:
      self.q_norm = nnx.Param(jnp.ones((l, d), dt))
      self.k_norm = nnx.Param(jnp.ones((l, d), dt))
    self.mlp_norm = nnx.Param(jnp.ones((l, h), dt))
    self.gate = _init(rngs, (l, h, f), h, dt)
    self.up = _init(rngs, (l, h, f), h, dt)
    self.down = _init(rngs, (l, f, h), f, dt)

  def arrays(self) -> dict[str, Array]:
    return {name: value[...] for name, value in vars(self).items()
            if isinstance(value, nnx.Param)}


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
  """RMSNorm computed in float32, returned in x's dtype (as Hugging Face does)."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * x32.astype(x.dtype)


def rope_inverse_frequencies(cfg: ModelConfig) -> Array:
  """[D/2] float32 inverse frequencies, with Llama-3 scaling when configured."""
  d = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  if not cfg.rope_scaling:
    return inv_freq
  s = dict(cfg.rope_scaling)
  factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
  old_len = s["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv_freq
  low_wavelen, high_wavelen = old_len / low, old_len / high
  smooth = (old_len / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
  scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def apply_rope(x: Array, positions: Array, inv_freq: Array) -> Array:
  """Rotary embedding, rotate-half convention. x: [B, T, heads, D]; positions: [B, T]."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, T, D/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """Grouped-query attention with float32 softmax.

  Args:
    q: [B, T, N, D]; k, v: [B, S, K, D] with N a multiple of K.
    mask: [B, T, S] bool, True where query t may attend to key slot s.
  Returns:
    [B, T, N, D] in q's dtype.
  """
  b, t, n, d = q.shape
  kv_heads = k.shape[2]
  groups = n // kv_heads
  # Heads first, each kv head's G query heads stacked as G*T rows: both products are then
  # plain batched [G*T, D] x [D, S] and [G*T, S] x [S, D] matmuls. Written per (t, g) the
  # same einsums made XLA:CPU transpose the scores and probabilities in the backward pass
  # (measured together with `linear`'s change, see there).
  q = q.reshape(b, t, kv_heads, groups, d).transpose(0, 2, 3, 1, 4)
  q = q.reshape(b, kv_heads, groups * t, d)
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, D]
  scores = jnp.einsum("bkqd,bksd->bkqs", q, k,
                      preferred_element_type=jnp.float32) / math.sqrt(d)
  scores = scores.reshape(b, kv_heads, groups, t, -1)
  scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, kv_heads, groups * t, -1)
  out = jnp.einsum("bkqs,bksd->bkqd", probs, v)
  return out.reshape(b, kv_heads, groups, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, n, d)


def chunked_attention(q: Array, k: Array, v: Array, mask: Array, chunk: int) -> Array:
  """`attention` over query chunks of `chunk` rows, each rematerialized in the backward
  pass: the [B, K, G, chunk, S] scores of one chunk exist at a time instead of [T, S]
  for all, and the same softmax over the whole key row gives the same values.

  Args and returns as `attention`.
  """
  b, t, n, d = q.shape
  if not chunk or t <= chunk:
    return attention(q, k, v, mask)
  pad = -t % chunk
  q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
  mask = jnp.pad(mask, ((0, 0), (0, pad), (0, 0)))  # padded query rows attend nowhere
  chunks = (t + pad) // chunk
  q_chunks = q.reshape(b, chunks, chunk, n, d).swapaxes(0, 1)
  mask_chunks = mask.reshape(b, chunks, chunk, -1).swapaxes(0, 1)
  one = jax.checkpoint(lambda qm: attention(qm[0], k, v, qm[1]))
  out = jax.lax.map(one, (q_chunks, mask_chunks))  # [chunks, B, chunk, N, D]
  return out.swapaxes(0, 1).reshape(b, chunks * chunk, n, d)[:, :t]


def cached_attention(q: Array, k_cache: Array, v_cache: Array, mask: Array,
                     chunk: int = 0, decode: str = "sum") -> Array:
  """`attention` over a KV cache laid out [B, K, S, D].

  For one new token (decode), `decode` chooses how both products are written:
  "sum", a broadcast multiply-and-sum (its scores in rows of at most
  DECODE_SCORE_ROW slots), which XLA on CPU fuses into loops that read the cache once
  at memory speed, where the same products as batched dots (3 query rows per head
  group) ran 4x slower at 640 slots; "dot", batched dots,
  which the TPU compiler turned into 44% fewer bytes accessed than "sum" for
  Qwen2.5-Math-1.5B's decode step on v4 (results/compile_pod/README.md). A prompt
  (T > 1) goes to `chunked_attention` (`attention` when chunk is 0).

  Args:
    q: [B, T, N, D]; k_cache, v_cache: [B, K, S, D].
    mask: [B, T, S] bool.
  Returns:
    [B, T, N, D] in q's dtype.
  """
  b, t, n, d = q.shape
  if t > 1:
    return chunked_attention(q, k_cache.transpose(0, 2, 1, 3), v_cache.transpose(0, 2, 1, 3),
                             mask, chunk)
  kv_heads, slots = k_cache.shape[1], k_cache.shape[2]
  if decode == "dot":
    q = q.reshape(b, kv_heads, n // kv_heads, d)  # [B, K, G, D]
    scores = jnp.einsum("bkgd,bksd->bkgs", q, k_cache,
                        preferred_element_type=jnp.float32) / math.sqrt(d)
  else:
    # Scores in rows of at most DECODE_SCORE_ROW slots: XLA:CPU's fused reduce over D
    # ran 4-11x slower per slot once the row it writes passed 1024 slots, and rows of a few
    # hundred beat one row of 663-1024 (results/bench_rollout/n1024/README.md).
    block = decode_score_block(slots)
    q = q.reshape(b, kv_heads, n // kv_heads, 1, 1, d).astype(jnp.float32)
    k_blocks = k_cache.reshape(b, kv_heads, 1, slots // block, block, d).astype(jnp.float32)
    scores = jnp.sum(q * k_blocks, axis=-1).reshape(b, kv_heads, n // kv_heads, slots)
    scores = scores / math.sqrt(d)
  scores = jnp.where(mask[:, None], scores, jnp.finfo(jnp.float32).min)  # [B, K, G, S]
  probs = jax.nn.softmax(scores, axis=-1).astype(v_cache.dtype)
  if decode == "dot":
    out = jnp.einsum("bkgs,bksd->bkgd", probs, v_cache)
  else:
    out = jnp.sum(probs[..., None] * v_cache[:, :, None], axis=3)  # [B, K, G, D]
  return out.reshape(b, 1, n, d)


DECODE_SCORE_ROW = 256


def decode_score_block(slots: int) -> int:
  """The largest divisor of `slots` that is at most DECODE_SCORE_ROW (`slots` itself up
  to there; 1, no blocking, for a prime above it: `decode_cache_length` avoids those)."""
  return next(block for block in range(min(slots, DECODE_SCORE_ROW), 0, -1)
              if slots % block == 0)


def decode_cache_length(length: int) -> int:
  """`length` cache slots, rounded up to an even number above DECODE_SCORE_ROW, so that
  `cached_attention` can split its decode scores into rows of at most that many."""
  return length + length % 2 if length > DECODE_SCORE_ROW else length


def linear(x: Array, w: Array) -> Array:
  """x @ w for x: [..., I], w: [I, O] -> [..., O], with the backward pass written out.

  Its two products are plain 2-D matmuls on row-major operands: dx = dy @ w.T and
  dw = x2.T @ dy2 over the flattened [tokens, .] rows. Left to autodiff, XLA:CPU fuses the
  elementwise backward of what follows (SiLU, the gate product, residual adds) into a
  transposing copy of [tokens, O] for the weight gradient, which reads its inputs with a
  stride. With this and `attention`'s heads-first layout, SmolLM2's 30-layer body took 5.2 s
  instead of 6.6-6.8 s for its forward + backward at 4 x 256 tokens
  (results/bench_speed/outputs/backward_ab.log).
  """
  return ad_checkpoint.checkpoint_name(_linear(x, w), "linear")


@jax.custom_vjp
def _linear(x: Array, w: Array) -> Array:
  return jnp.einsum("...i,io->...o", x, w)


def _linear_fwd(x: Array, w: Array):
  return _linear(x, w), (x, w)


def _linear_bwd(residuals, dy: Array):
  x, w = residuals
  rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  dx = jax.lax.dot_general(rows_dy, w, (((1,), (1,)), ((), ())))
  dw = jax.lax.dot_general(rows_x, rows_dy, (((0,), (0,)), ((), ())))
  return dx.reshape(x.shape).astype(x.dtype), dw.astype(w.dtype)


_linear.defvjp(_linear_fwd, _linear_bwd)


def _layer(cfg: ModelConfig, p: dict[str, Array], x: Array, positions: Array,
           mask: Array, inv_freq: Array, attend):
  """One pre-norm decoder layer. x: [B, T, H] -> ([B, T, H], (k_new, v_new)).

  attend(q, k, v, mask) -> [B, T, N, D] runs attention given this call's
  keys and values (writing them to a cache first, if there is one).
  """
  b, t, _ = x.shape
  dt = x.dtype
  h = rms_norm(x, p["attn_norm"], cfg.rms_norm_eps)
  q = linear(h, p["q"].astype(dt))
  k = linear(h, p["k"].astype(dt))
  v = linear(h, p["v"].astype(dt))
  if cfg.qkv_bias:
    q, k, v = q + p["q_bias"].astype(dt), k + p["k_bias"].astype(dt), v + p["v_bias"].astype(dt)
  q = q.reshape(b, t, cfg.num_heads, cfg.head_dim)
  k = k.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
  v = v.reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
  if cfg.qk_norm:
    q = rms_norm(q, p["q_norm"], cfg.rms_norm_eps)
    k = rms_norm(k, p["k_norm"], cfg.rms_norm_eps)
  q = apply_rope(q, positions, inv_freq)
  k = apply_rope(k, positions, inv_freq)
  attn = attend(q, k, v, mask).reshape(b, t, cfg.num_heads * cfg.head_dim)
  x = x + linear(attn, p["o"].astype(dt))
  h = rms_norm(x, p["mlp_norm"], cfg.rms_norm_eps)
  gate = linear(h, p["gate"].astype(dt))
  up = linear(h, p["up"].astype(dt))
  x = x + linear(jax.nn.silu(gate) * up, p["down"].astype(dt))
  return sharding.constrain(x, sharding.ACTIVATION_SPEC), (k, v)


class Transformer(nnx.Module):
  """Decoder-only LM. Call it for hidden states, then `logits` or `scores`."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = jnp.dtype(cfg.param_dtype)
    self.embed = nnx.Param(
        (jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.hidden_size)) * 0.02).astype(dt))
    self.layers = Layers(cfg, rngs)
    self.final_norm = nnx.Param(jnp.ones((cfg.hidden_size,), dt))
    if not cfg.tie_embeddings and not cfg.num_labels:  # reward models have no LM head
      self.lm_head = _init(rngs, (cfg.hidden_size, cfg.vocab_size), cfg.hidden_size, dt)
    if cfg.num_labels:
      self.score = _init(rngs, (cfg.hidden_size, cfg.num_labels), cfg.hidden_size, dt)

  def __call__(self, tokens: Array, positions: Array, kv_valid: Array,
               cache: KVCache | None = None, cache_index: Array | int = 0,
               layer_params: list[dict[str, Array]] | None = None
               ) -> tuple[Array, KVCache | None]:
    """Final-norm hidden states.

    Args:
      tokens: [B, T] int32.
      positions: [B, T] int32 RoPE positions (left padding: cumsum(valid) - 1).
      kv_valid: [B, S] bool, the key slots that hold real tokens. Without a
        cache S == T; with one S is the cache length and must already mark
        the slots this call writes.
      cache: None (attend within `tokens`) or a KV cache to write this call's
        keys/values into at slots [cache_index, cache_index + T).
      cache_index: int32 scalar, the cache slot of tokens[:, 0].
      layer_params: `self.layer_params()`, for callers that run the cached
        path in a loop: slicing the stacked weights once, outside the loop,
        keeps a per-layer weight copy out of every decode step.
    Returns:
      (hidden [B, T, H] in the compute dtype, updated cache or None).
    """
    cfg = self.cfg
    b, t = tokens.shape
    x = self.embed[...].astype(cfg.compute_dtype)[tokens]
    x = sharding.constrain(x, sharding.ACTIVATION_SPEC)
    inv_freq = rope_inverse_frequencies(cfg)
    query_slots = cache_index + jnp.arange(t)
    key_slots = jnp.arange(kv_valid.shape[1])
    mask = (key_slots[None, :] <= query_slots[:, None])[None] & kv_valid[:, None, :]

    if cache is None:
      if cfg.train_attention == "splash":
        attend = lambda q, k, v, m: splash_attention.splash_attention(q, k, v, kv_valid)
      else:
        attend = lambda q, k, v, m: chunked_attention(q, k, v, m, cfg.attention_chunk)
      def body(x, p):
        x, _ = _layer(cfg, p, x, positions, mask, inv_freq, attend)
        return x, None
      if cfg.remat != "none":
        body = jax.checkpoint(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
      x, _ = jax.lax.scan(body, x, self.layers.arrays())
    else:
      decode = decode_mode(cfg)
      new_cache = []
      for p, layer_cache in zip(layer_params or self.layer_params(), cache):
        def write_then_attend(q, k, v, mask, layer_cache=layer_cache):
          start = (0, 0, cache_index, 0)
          written = {name: jax.lax.dynamic_update_slice(
              layer_cache[name], new.transpose(0, 2, 1, 3).astype(layer_cache[name].dtype), start)
                     for name, new in (("k", k), ("v", v))}
          new_cache.append(written)
          return cached_attention(q, written["k"], written["v"], mask, cfg.attention_chunk,
                                  decode)
        x, _ = _layer(cfg, p, x, positions, mask, inv_freq, write_then_attend)
      cache = new_cache
    return rms_norm(x, self.final_norm[...], cfg.rms_norm_eps), cache

  def run_layers(self, tokens: Array, positions: Array, attend,
                 layer_params: list[dict[str, Array]]) -> Array:
    """Final-norm hidden states [B, T, H] with attention supplied by the caller, for
    callers that keep their own KV cache (the continuous engine).

    attend(layer, q, k, v) -> [B, T, N, D], with q: [B, T, N, D] and k, v:
    [B, T, K, D] this call's projections after RoPE (and QK norm).
    """
    cfg = self.cfg
    x = self.embed[...].astype(cfg.compute_dtype)[tokens]
    x = sharding.constrain(x, sharding.ACTIVATION_SPEC)
    inv_freq = rope_inverse_frequencies(cfg)
    for i, p in enumerate(layer_params):
      x, _ = _layer(cfg, p, x, positions, None, inv_freq,
                    lambda q, k, v, _, i=i: attend(i, q, k, v))
    return rms_norm(x, self.final_norm[...], cfg.rms_norm_eps)

  def layer_params(self) -> list[dict[str, Array]]:
    """The stacked layer weights as one dict per layer (copies)."""
    stacked = self.layers.arrays()
    return [{name: w[i] for name, w in stacked.items()} for i in range(self.cfg.num_layers)]

  def head_weight(self) -> Array:
    """The LM head [H, V] (the embedding's transpose when tied)."""
    return self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]

  def logits(self, hidden: Array) -> Array:
    """[..., H] -> [..., V] float32 logits."""
    return head_logits(hidden, self.head_weight())

  def scores(self, hidden: Array, valid: Array) -> Array:
    """Scalar head on each sequence's last valid token: [B, T, H] -> [B, labels] float32."""
    last = jnp.max(jnp.where(valid, jnp.arange(valid.shape[1]), 0), axis=1)
    h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    return jnp.einsum("bh,hl->bl", h, self.score[...].astype(h.dtype),
                      preferred_element_type=jnp.float32)

  def init_cache(self, batch: int, slots: int) -> KVCache:
    cfg = self.cfg
    shape = (batch, cfg.num_kv_heads, slots, cfg.head_dim)
    return [{"k": jnp.zeros(shape, cfg.compute_dtype), "v": jnp.zeros(shape, cfg.compute_dtype)}
            for _ in range(cfg.num_layers)]


def decode_mode(cfg: ModelConfig) -> str:
  """cfg.decode_attention with "auto" resolved: "sum" on CPU, "dot" elsewhere (the
  platform of the active mesh, so a TPU slice compiled from a CPU host gets "dot")."""
  if cfg.decode_attention != "auto":
    return cfg.decode_attention
  return "sum" if sharding.platform() == "cpu" else "dot"


def positions_from_valid(valid: Array) -> Array:
  """RoPE positions for left- or right-padded rows: [B, T] bool -> [B, T] int32."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)


def forward_logits(model: Transformer, tokens: Array, valid: Array) -> Array:
  """Teacher-forced logits. tokens, valid: [B, T] -> [B, T, V] float32."""
  hidden, _ = model(tokens, positions_from_valid(valid), valid)
  return model.logits(hidden)


def token_logprobs(model: Transformer, tokens: Array, valid: Array,
                   temperature: float = 1.0) -> Array:
  """log pi(tokens[:, t+1] | tokens[:, :t+1]) for every t: [B, T] -> [B, T-1] float32.

  Logprobs are of softmax(logits / temperature), the distribution the sampler
  draws from before top-k / top-p truncation (temperature 0 counts as 1).
  """
  logits = forward_logits(model, tokens[:, :-1], valid[:, :-1])
  return gather_logprobs(logits, tokens[:, 1:], temperature)


def head_logits(hidden: Array, head: Array) -> Array:
  """[..., H] x [H, V] -> [..., V] float32 logits, in hidden's dtype inside."""
  return jnp.einsum("...h,hv->...v", hidden, head.astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


def map_position_chunks(fn, hidden: Array, head: Array, inputs: tuple, chunk: int,
                        temperature: float = 1.0):
  """fn applied to the logits of `chunk` positions at a time, each chunk rematerialized in
  the backward pass: the [N, chunk, V] float32 logits of one chunk exist at a time, never
  [N, R, V] (model.logits_chunk).

  Args:
    fn: (logits [N, c, V] float32 at the temperature, *inputs sliced to [N, c, ...]) ->
      a pytree of [N, c, ...] arrays.
    hidden: [N, R, H]; head: [H, V]; inputs: arrays [N, R, ...] cut like the positions.
  Returns:
    fn's pytree with its arrays put back to [N, R, ...].
  """
  n, r, _ = hidden.shape
  full = r // chunk

  def apply(h, *rest):
    logits = head_logits(h, head)
    if temperature and temperature != 1.0:
      logits = logits / temperature
    return fn(logits, *rest)

  # Chunks are cut by index inside the rematerialized function: a reshaped copy of a
  # [N, R, V] input (the teacher's logits), or its slices saved for the backward pass,
  # would be as large as what chunking saves.
  @jax.checkpoint
  def one(i):
    cut = lambda x: jax.lax.dynamic_slice_in_dim(x, i * chunk, chunk, axis=1)
    return apply(cut(hidden), *map(cut, inputs))

  out = jax.tree.map(lambda x: x.swapaxes(0, 1).reshape(n, full * chunk, *x.shape[3:]),
                     jax.lax.map(one, jnp.arange(full)))
  if r % chunk:
    tail = jax.checkpoint(apply)(hidden[:, full * chunk:], *(x[:, full * chunk:] for x in inputs))
    out = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), out, tail)
  return out


def chunked_head(hidden: Array, head: Array, targets: Array, chunk: int, temperature: float,
                 with_entropy: bool) -> tuple[Array, Array | None]:
  """Logprobs of `targets` (and the entropy) under softmax(hidden @ head / T), `chunk`
  positions at a time (map_position_chunks).

  Args:
    hidden: [N, R, H]; head: [H, V]; targets: [N, R] int32.
  Returns:
    ([N, R] float32 logprobs, [N, R] float32 entropy or None).
  """
  def logprobs_and_entropy(logits, tgt):
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0] - logz
    if not with_entropy:
      return picked, None
    probs = jnp.exp(logits - logz[..., None])
    return picked, logz - jnp.sum(probs * logits, axis=-1)

  return map_position_chunks(logprobs_and_entropy, hidden, head, (targets,), chunk, temperature)


def gather_logprobs(logits: Array, targets: Array, temperature: float = 1.0) -> Array:
  """log_softmax(logits / T)[targets]: [..., V], [...] -> [...] float32."""
  if temperature and temperature != 1.0:
    logits = logits / temperature
  logz = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked - logz


