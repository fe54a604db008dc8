"""Continuous batching: slots refilled as requests stop, so few decoded rows are padding.

A fixed number of slots decode together. The host loop admits waiting requests
(prompt x sample) into free slots, prefills their prompts (once per prompt, copied
into each sample's slot), runs `decode_steps` decode steps on device, reads the
emitted tokens back (one transfer per call), and frees the slots of the requests
that stopped. Attention reads each slot's cache only up to the longest live slot's
length (rounded up to one of `read_buckets` lengths, one compilation each), not the
whole prompt + max_new_tokens. Once no request waits, the live slots are moved to the
front and a call decodes only the first few slots that hold them (one of
`active_buckets` sizes, `active_slot_count`), so the long tail of a batch is not
decoded at full width (slots layout on one device).

The cache layout (`kv_layout`): "slots", each slot's keys and values contiguous
([S, K, L, D] per layer, the static sampler's layout), read up to the longest live slot;
or "pages", a slot-major pool of pages ([S * W, page, 2K, D], slot s owning pages
s * W .. s * W + W - 1) that JAX's ragged paged attention kernel reads on TPU, each slot
only as far as its own length (`paged_attention`). "auto" takes pages on TPU and slots
elsewhere: on XLA:CPU gathering one layer's keys through a page table took as long as
the attention products over the contiguous cache (6.4 vs 6.1 ms at 64 slots x 672
positions, results/bench_rollout/kv_gather.json), so pages read there by the pure-JAX
path (which the tests run to check the TPU layout) cost twice the slots layout.

Draws are keyed by (request, token index), so a request's response does not depend
on the slots, the schedule or the other requests: the output equals itself across
slot counts, and greedy decoding equals the static sampler's (`sampler.generate`).
The output is `sampler.SampleOutput` in request order (row b * G + g).
"""
import collections
import dataclasses
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import paged_attention
from hybrid_rl.sampling import sampler

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  """How rollouts are generated (config.sampling: engine, slots, decode_steps,
  read_buckets, active_buckets, kv_layout, page_size). Never what is sampled."""
  engine: str = "static"  # "static" | "continuous"
  slots: int = 0  # rows of cache (fixed by the settings, not the call, so that calls of
  # any size share compiled programs); 0: the call's requests rounded up to a power of two
  # (the rollout stages pass rows / sampling.chunks, so rounded: the static rows per call)
  decode_steps: int = 16  # decode steps per device call (one host check per call)
  read_buckets: int = 8  # cache lengths attention reads (one compilation each)
  active_buckets: int = 8  # slot counts a tail call decodes (`active_slot_count`)
  kv_layout: str = "auto"  # "slots" | "pages" | "auto" (pages on TPU)
  page_size: int = 16  # tokens per page (kv_layout "pages")


KV_LAYOUTS = ("auto", "slots", "pages")


def layout_of(settings: EngineSettings) -> str:
  if settings.kv_layout != "auto":
    return settings.kv_layout
  return "pages" if sharding.platform() == "tpu" else "slots"


def settings_from_config(sampling) -> EngineSettings:
  """EngineSettings from a config.sampling block (fields it lacks keep their defaults)."""
  names = [f.name for f in dataclasses.fields(EngineSettings)]
  return EngineSettings(**{n: sampling[n] for n in names if n in sampling})


def _layer_weights(model: transformer.Transformer):
  return sharding.decode_weights(model.layer_params(), model.cfg.compute_dtype)


def init_cache(cfg: transformer.ModelConfig, slots: int, length: int, layout: str,
               page_size: int) -> list:
  """Per layer {"k", "v"}: [S, K, length, D] (slots) or [S * length / page, page, 2K, D]
  (pages), in the compute dtype."""
  if layout == "slots":
    shape = (slots, cfg.num_kv_heads, length, cfg.head_dim)
    return [{"k": jnp.zeros(shape, cfg.compute_dtype), "v": jnp.zeros(shape, cfg.compute_dtype)}
            for _ in range(cfg.num_layers)]
  shape = (slots * length // page_size, page_size, 2 * cfg.num_kv_heads, cfg.head_dim)
  return [jnp.zeros(shape, cfg.compute_dtype) for _ in range(cfg.num_layers)]


def _by_slot(pool: Array, slots: int) -> Array:
  """A slot-major pool [S * W, page, 2K, D] viewed as [S, W * page, 2K, D] (no copy)."""
  return pool.reshape(slots, -1, *pool.shape[2:])


def _write_prompts(layer_cache, slots: int, slot_ids: Array, k: Array, v: Array):
  """Writes k, v: [A, T, K, D] at positions 0..T-1 of slots `slot_ids` (S: dropped)."""
  if isinstance(layer_cache, dict):
    write = lambda c, x: c.at[slot_ids, :, :x.shape[1]].set(
        x.transpose(0, 2, 1, 3).astype(c.dtype), mode="drop")
    return {"k": write(layer_cache["k"], k), "v": write(layer_cache["v"], v)}
  view = _by_slot(layer_cache, slots)
  view = view.at[slot_ids, :k.shape[1]].set(
      paged_attention.combine_kv(k, v).astype(view.dtype), mode="drop")
  return view.reshape(layer_cache.shape)


def _write_token(layer_cache, slots: int, index: Array, k: Array, v: Array):
  """Writes the first A slots' k, v: [A, K, D] at their positions index: [A]."""
  rows = jnp.arange(index.shape[0])
  if isinstance(layer_cache, dict):
    write = lambda c, x: c.at[rows, :, index].set(x.astype(c.dtype))
    return {"k": write(layer_cache["k"], k), "v": write(layer_cache["v"], v)}
  view = _by_slot(layer_cache, slots)
  view = view.at[rows, index].set(paged_attention.combine_kv(k, v).astype(view.dtype))
  return view.reshape(layer_cache.shape)


def _attend(layer_cache, slots: int, q: Array, index: Array, read_len: int,
            decode: str) -> Array:
  """One query for each of the first A slots: q [A, 1, N, D] attends to its positions
  0..index -> [A, 1, N, D]. The slots layout's cache is `_decode`'s window, [A, K,
  read_len, D]; `read_len` bounds the pages the pure-JAX pages path reads."""
  a = index.shape[0]
  if isinstance(layer_cache, dict):
    mask = (jnp.arange(read_len)[None, :] <= index[:, None])[:, None, :]  # [A, 1, read]
    return transformer.cached_attention(q, layer_cache["k"], layer_cache["v"], mask, 0,
                                        decode)
  page_size = layer_cache.shape[1]
  pool = layer_cache[:a * (layer_cache.shape[0] // slots)]  # slot-major: the first A slots
  out = paged_attention.slot_major_attention(q[:, 0], pool, index + 1,
                                             read_len // page_size)
  return out[:, None]


def read_lengths(max_len: int, buckets: int, multiple: int = 16) -> list[int]:
  """The cache lengths a decode call may read: up to `buckets` even steps, multiples of
  `multiple`, the last max_len rounded up to one (no more than the static sampler's)."""
  top = -(-max_len // multiple) * multiple
  step = -(-max_len // (max(1, buckets) * multiple)) * multiple
  return sorted({min(step * (i + 1), top) for i in range(max(1, buckets))})


def read_length(lengths: list[int], longest: int) -> int:
  """The shortest of `lengths` (read_lengths') that covers `longest` positions, or the
  longest of them."""
  return next(length for length in lengths if length >= min(longest, lengths[-1]))


def simulate_schedule(lengths: np.ndarray, prompt_len: int, slots: int, decode_steps: int,
                      samples: int, reads: list[int],
                      active_buckets: int = EngineSettings.active_buckets) -> dict:
  """`generate`'s schedule for requests of these response lengths (request r = prompt
  r // samples, every prompt `prompt_len` tokens): admitted in order into free slots at
  each host check, decode_steps steps a call, `reads` = read_lengths(...), the slots a
  call decodes active_slot_count(live, slots, active_buckets).

  Returns per decode step: "live" live slots, "cache" cache tokens summed over slots (a
  live slot its length, any other one token: what a per-slot kernel reads), "active" the
  slots the call decodes once compacted, "read" the call's read length; and
  "prefill_prompts", the distinct prompts each refill prefills.
  """
  remaining = np.zeros(slots, np.int64)  # tokens still to emit; 0: a free slot
  cache = np.zeros(slots, np.int64)
  steps = {"live": [], "cache": [], "active": [], "read": []}
  prefills = []
  start = 0
  while start < len(lengths) or remaining.any():
    free = np.flatnonzero(remaining == 0)[:len(lengths) - start]
    admitted = np.arange(start, start + len(free))
    remaining[free], cache[free] = lengths[admitted], prompt_len
    start += len(free)
    if len(free):
      prefills.append(len(np.unique(admitted // samples)))
    live = remaining > 0
    active = active_slot_count(int(live.sum()), slots, active_buckets)
    read = read_length(reads, int(cache[live].max()) + decode_steps)
    for _ in range(decode_steps):
      live = remaining > 0
      if not live.any():
        break
      steps["live"].append(int(live.sum()))
      steps["cache"].append(int(np.where(live, cache + 1, 1).sum()))
      steps["active"].append(active)
      steps["read"].append(read)
      cache += live
      remaining -= live
  return {**{k: np.array(v) for k, v in steps.items()}, "prefill_prompts": np.array(prefills)}


def _prefill(graphdef: nnx.GraphDef, state: nnx.State, cache: transformer.KVCache,
             logits: Array, prompts: Array, prompt_lens: Array, slot_ids: Array,
             slot_prompt: Array) -> tuple[transformer.KVCache, Array]:
  """Runs the prompts once and copies each into the cache rows of its admitted slots.

  Args:
    cache: init_cache's (either layout); logits: [S, V] float32, each slot's
      next-token logits.
    prompts: [Bp, Pb] int32, right-padded; prompt_lens: [Bp] int32 (>= 1).
    slot_ids: [A] int32, the slots admitted (S: a padding entry, dropped).
    slot_prompt: [A] int32, each admitted slot's row of `prompts`.
  Returns:
    (cache, logits) with the admitted slots' prompt keys, values and logits written.
  """
  model = nnx.merge(graphdef, state)
  b, p = prompts.shape
  positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
  valid = positions < prompt_lens[:, None]
  mask = (positions[:, :, None] >= positions[:, None, :]) & valid[:, None, :]
  kvs = []

  def attend(_, q, k, v):
    kvs.append((k, v))
    return transformer.chunked_attention(q, k, v, mask, model.cfg.attention_chunk)

  hidden = model.run_layers(prompts, positions, attend, _layer_weights(model))
  last = jnp.take_along_axis(hidden, (prompt_lens - 1)[:, None, None], axis=1)[:, 0]
  prompt_logits = model.logits(last)  # [Bp, V]
  slots = logits.shape[0]
  cache = [_write_prompts(c, slots, slot_ids, k[slot_prompt], v[slot_prompt])
           for c, (k, v) in zip(cache, kvs)]
  logits = logits.at[slot_ids].set(prompt_logits[slot_prompt], mode="drop")
  return cache, logits


prefill_jit = jax.jit(_prefill, static_argnums=(0,), donate_argnums=(2, 3))


def _decode(graphdef: nnx.GraphDef, sp: sampler.SamplingParams, read_len: int, steps: int,
            state: nnx.State, cache: transformer.KVCache, logits: Array, kv_len: Array,
            generated: Array, live: Array, request: Array, rng: Array):
  """Up to `steps` decode steps of the first A of the S slots (stops early once no slot
  is live); the other slots, all free, are neither computed nor read.

  Args:
    cache, logits: as `_prefill` (all S slots).
    kv_len: [A] int32, tokens in each slot's cache (the position of the next token
      fed); generated: [A] int32, tokens emitted so far; live: [A] bool, the slot's
      request is still generating; request: [A] int32 (keys the draws).
    read_len: static, cache positions attention reads (>= every live kv_len + steps).
  Returns:
    dict of cache, logits (all S slots), kv_len, generated, live, stopped [A] bool
    (emitted a stop token in this call), and tokens, logprobs [A, steps], emitted
    [A, steps] bool.
  """
  model = nnx.merge(graphdef, state)
  weights = _layer_weights(model)
  decode = transformer.decode_mode(model.cfg)
  s, slots = kv_len.shape[0], logits.shape[0]
  stop_ids = jnp.asarray(sp.stop_token_ids or (-1,), jnp.int32)
  request_keys = jax.vmap(lambda r: jax.random.fold_in(rng, r))(request)

  def body(c):
    i = c["i"]
    u = jax.vmap(lambda key, t: jax.random.uniform(jax.random.fold_in(key, t)))(
        request_keys, c["generated"])
    token, logprob = sampler.sample_token_from_uniform(u, c["logits"], sp)
    emit = c["live"]
    token = jnp.where(emit, token, sp.pad_token_id)
    logprob = jnp.where(emit, logprob, 0.0)
    generated = c["generated"] + emit.astype(jnp.int32)
    stop = emit & jnp.isin(token, stop_ids)
    live = emit & ~stop & (generated < sp.max_new_tokens)
    # Slots that are not live write past their length (never read) and attend anyway.
    index = jnp.minimum(c["kv_len"], read_len - 1)
    cache = list(c["cache"])

    def attend(layer, q, k, v):
      cache[layer] = _write_token(cache[layer], slots, index, k[:, 0], v[:, 0])
      return _attend(cache[layer], slots, q, index, read_len, decode)

    hidden = model.run_layers(token[:, None], index[:, None], attend, weights)
    return dict(
        i=i + 1, cache=cache, logits=model.logits(hidden[:, 0]),
        kv_len=c["kv_len"] + live.astype(jnp.int32), generated=generated, live=live,
        stopped=c["stopped"] | stop,
        tokens=c["tokens"].at[:, i].set(token), logprobs=c["logprobs"].at[:, i].set(logprob),
        emitted=c["emitted"].at[:, i].set(emit))

  # In the slots layout the loop runs on a copy of what it reads and writes, the first A
  # slots' first read_len positions, put back once after it: sliced out of the whole cache
  # inside the loop, that prefix was copied on every step (XLA:CPU does not fuse the
  # slices into the attention's loops), 27% of a step at 288 of 672 positions.
  whole = cache if isinstance(cache[0], dict) else None
  if whole is not None:
    cache = [{name: buf[:s, :, :read_len] for name, buf in layer.items()} for layer in cache]
  carry = dict(i=jnp.zeros((), jnp.int32), cache=cache, logits=logits[:s], kv_len=kv_len,
               generated=generated, live=live, stopped=jnp.zeros((s,), bool),
               tokens=jnp.full((s, steps), sp.pad_token_id, jnp.int32),
               logprobs=jnp.zeros((s, steps), jnp.float32),
               emitted=jnp.zeros((s, steps), bool))
  c = jax.lax.while_loop(lambda c: (c["i"] < steps) & jnp.any(c["live"]), body, carry)
  c.pop("i")
  c["logits"] = logits.at[:s].set(c["logits"])
  if whole is not None:
    c["cache"] = [{name: jax.lax.dynamic_update_slice(buf, window[name], (0, 0, 0, 0))
                   for name, buf in layer.items()} for layer, window in zip(whole, c["cache"])]
  return c


decode_jit = jax.jit(_decode, static_argnums=(0, 1, 2, 3), donate_argnums=(5, 6))


def _move_slots(cache: transformer.KVCache, logits: Array, src: Array, dst: Array):
  """Slot dst[i] takes slot src[i]'s cache rows and logits (slots layout); src, dst:
  [M] int32, dst = S a padding entry (dropped). Only the moved rows are copied: a
  gather of the whole cache cost ~2.3 s a compaction here (SmolLM2, 64 x 672)."""
  move = lambda x: x.at[dst].set(x[src], mode="drop")
  return jax.tree.map(move, cache), move(logits)


move_slots_jit = jax.jit(_move_slots, donate_argnums=(0, 1))


def pow2_ceil(n: int) -> int:
  """Smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(0, n - 1).bit_length()


def pow2_bucket(n: int, limit: int) -> int:
  """Smallest power of two >= n, at most limit (the rows of a prefill call, a
  Reinforce-Ada round's batch): few shapes, few compilations."""
  return min(limit, pow2_ceil(n))


def active_slot_count(live: int, slots: int, buckets: int) -> int:
  """The slots a decode call runs when its `live` live slots are at the front: a multiple
  of step = slots / buckets (rounded up), or a power of two below one step. At most
  buckets + log2(step) sizes (one compilation each per read length); buckets = 1 gives
  powers of two only. Finer than powers of two because on XLA:CPU each decoded slot costs
  its matmuls whether live or not: a call with 33 live of 64 slots decoded at 40, not 64."""
  step = -(-slots // max(1, buckets))
  return min(slots, pow2_ceil(live) if live <= step else -(-live // step) * step)


def slot_count(settings: EngineSettings, num_requests: int) -> int:
  """Rows of cache for a call of `num_requests`: settings.slots, or when 0 the requests
  rounded up to a power of two. A call with fewer requests than slots leaves the rest
  free, so calls of other sizes (Reinforce-Ada's rounds) reuse the compiled programs."""
  return settings.slots or pow2_ceil(num_requests)


@dataclasses.dataclass
class EngineStats:
  """What one generate call did. decode_row_steps counts slot-steps of decode calls,
  emitted the response tokens among them (the rest is padding: free or stopped slots)."""
  calls: int = 0
  prefills: int = 0
  decode_row_steps: int = 0
  emitted: int = 0
  compactions: int = 0  # live slots moved to the front (see `generate`)
  read_lengths: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  active_slots: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  # With timed set, each device call is waited for and its seconds (compiling included)
  # added up by kind ("prefill", "move", "decode"): where a generate call's time goes.
  timed: bool = False
  seconds: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _call(stats: EngineStats, kind: str, fn, *args):
  """fn(*args), waited for and timed into stats.seconds[kind] when stats.timed."""
  if not stats.timed:
    return fn(*args)
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  stats.seconds[kind] += time.perf_counter() - start
  return out


def generate(model: transformer.Transformer, prompts: Array, prompt_valid: Array, rng: Array,
             sp: sampler.SamplingParams, settings: EngineSettings,
             stats: EngineStats | None = None, first_request: int = 0
             ) -> sampler.SampleOutput:
  """Samples G responses per prompt with continuous batching.

  Args and output as `sampler.generate` (prompts [B, P] left-padded, valid [B, P]);
  the output's arrays are host (NumPy) arrays. `stats`, if given, is filled in.
  first_request: the draws of row r are keyed by request first_request + r, so that a
  process sampling rows [first_request, ...) of a larger batch draws what one process
  sampling the whole batch would.
  """
  graphdef, state = nnx.split(model)
  cfg = model.cfg
  prompts, prompt_valid = np.asarray(prompts), np.asarray(prompt_valid)
  prompt_rows = [t[v] for t, v in zip(prompts, prompt_valid)]
  if min(len(r) for r in prompt_rows) == 0:
    raise ValueError("continuous engine: a prompt has no valid token")
  b, p = prompts.shape
  g, n = sp.num_samples, sp.max_new_tokens
  num_requests = b * g
  slots = slot_count(settings, num_requests)
  layout = layout_of(settings)
  lengths = read_lengths(p + n, settings.read_buckets,
                         settings.page_size if layout == "pages" else 16)
  stats = stats if stats is not None else EngineStats()
  # Decode calls run only the first `active` slots (active_slot_count) once requests run
  # out; on one device only: a prefix of slots split over devices is uneven.
  compact = layout == "slots" and sharding.batch_shards() == 1
  # A decode call does not depend on G: calls with other G (Reinforce-Ada's rounds, GRPO
  # and evaluation) share its programs.
  decode_sp = dataclasses.replace(sp, num_samples=1)

  cache = init_cache(cfg, slots, lengths[-1], layout, settings.page_size)
  logits = jnp.zeros((slots, cfg.vocab_size), jnp.float32)
  kv_len = np.zeros(slots, np.int32)
  generated = np.zeros(slots, np.int32)
  live = np.zeros(slots, bool)
  request = np.full(slots, -1, np.int32)  # -1: a free slot
  waiting = collections.deque(range(num_requests))

  out_tokens = np.full((num_requests, n), sp.pad_token_id, np.int32)
  out_logprobs = np.zeros((num_requests, n), np.float32)
  out_lengths = np.zeros(num_requests, np.int32)
  out_finished = np.zeros(num_requests, bool)

  while waiting or live.any():
    admitted = []  # (slot, request)
    for s in np.flatnonzero(request < 0)[:len(waiting)]:
      r = waiting.popleft()
      request[s], kv_len[s], generated[s], live[s] = r, len(prompt_rows[r // g]), 0, True
      admitted.append((int(s), r))
    if admitted:
      cache, logits = _call(stats, "prefill", _prefill_admitted, graphdef, state, cache,
                            logits, admitted, prompt_rows, g, p, slots)
      stats.prefills += 1
    active = slots
    if compact:
      active = active_slot_count(int(live.sum()), slots, settings.active_buckets)
      if live[active:].any():  # live slots into free ones at the front
        src = np.flatnonzero(live[active:]) + active
        dst = np.flatnonzero(~live[:active])[:len(src)]
        pad = pow2_bucket(len(src), slots) - len(src)  # few widths, few compilations
        cache, logits = _call(stats, "move", move_slots_jit, cache, logits,
                              jnp.asarray(np.pad(src, (0, pad))),
                              jnp.asarray(np.pad(dst, (0, pad), constant_values=slots)))
        for x in (kv_len, generated, live, request):
          x[dst], x[src] = x[src], x[dst]
        stats.compactions += 1
    read_len = read_length(lengths, int(kv_len[live].max()) + settings.decode_steps)
    c = _call(stats, "decode", decode_jit, graphdef, decode_sp, read_len,
              settings.decode_steps, state, cache, logits,
              *(jnp.asarray(x[:active]) for x in (kv_len, generated, live)),
              jnp.asarray(request[:active] + first_request), rng)
    cache, logits = c.pop("cache"), c.pop("logits")
    c = jax.device_get(c)  # the one transfer of this call
    stats.calls += 1
    stats.decode_row_steps += int(c["emitted"].any(0).sum()) * active
    stats.emitted += int(c["emitted"].sum())
    stats.read_lengths[read_len] += 1
    stats.active_slots[active] += 1
    for s in np.flatnonzero(request >= 0):
      r, start = request[s], generated[s]
      emitted = c["emitted"][s]
      count = int(emitted.sum())
      out_tokens[r, start:start + count] = c["tokens"][s][emitted]
      out_logprobs[r, start:start + count] = c["logprobs"][s][emitted]
      if not c["live"][s]:  # stopped or at max_new_tokens: the slot is free again
        out_lengths[r] = start + count
        out_finished[r] = c["stopped"][s]
        request[s] = -1
    for name, x in (("kv_len", kv_len), ("generated", generated), ("live", live)):
      x[:active] = c[name]

  mask = np.arange(n)[None, :] < out_lengths[:, None]
  return sampler.SampleOutput(out_tokens, out_logprobs, mask, out_lengths, out_finished)


def _prefill_admitted(graphdef, state, cache, logits, admitted, prompt_rows, g, prompt_len,
                      slots):
  """One prefill call for the admitted (slot, request) pairs: each distinct prompt runs
  once; rows are padded to powers of two so that few shapes compile."""
  prompt_ids = list(dict.fromkeys(r // g for _, r in admitted))
  row_of = {b: i for i, b in enumerate(prompt_ids)}
  tokens = np.zeros((pow2_bucket(len(prompt_ids), slots), prompt_len), np.int32)
  lens = np.ones(len(tokens), np.int32)
  for i, b in enumerate(prompt_ids):
    tokens[i, :len(prompt_rows[b])] = prompt_rows[b]
    lens[i] = len(prompt_rows[b])
  num_slots = pow2_bucket(len(admitted), slots)
  slot_ids = np.full(num_slots, slots, np.int32)  # out of range: dropped
  slot_prompt = np.zeros(num_slots, np.int32)
  for j, (s, r) in enumerate(admitted):
    slot_ids[j], slot_prompt[j] = s, row_of[r // g]
  return prefill_jit(graphdef, state, cache, logits, jnp.asarray(tokens), jnp.asarray(lens),
                     jnp.asarray(slot_ids), jnp.asarray(slot_prompt))
