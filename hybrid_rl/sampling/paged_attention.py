"""Decode attention over a paged KV cache: one query token per sequence (slot).

One layer's cache is a pool of pages laid out as JAX's TPU kernel wants it,
[num_pages, page_size, 2K, D], keys at even and values at odd combined heads; slot s's
token i lives at page page_table[s, i // page_size], offset i % page_size. On TPU
attention is `jax.experimental.pallas.ops.tpu.ragged_paged_attention`, which reads each
slot's own kv_len; elsewhere a pure-JAX gather of the table's pages, masked past kv_len
(equal to the kernel's reference, tests/test_continuous.py), which the caller bounds by
passing the first pages only.
"""
import math

import jax
import jax.numpy as jnp

from hybrid_rl.parallel import sharding

Array = jax.Array


KERNEL_HEAD_DIM = 128  # the kernel's head_dim must be a multiple of this (TPU lanes)


def combine_kv(k: Array, v: Array) -> Array:
  """[..., K, D] keys and values -> [..., 2K, D] interleaved (k0, v0, k1, v1, ...)."""
  return jnp.stack([k, v], axis=-2).reshape(*k.shape[:-2], 2 * k.shape[-2], k.shape[-1])


def gathered_decode_attention(q: Array, pool: Array, page_table: Array, kv_lens: Array) -> Array:
  """Pure-JAX paged decode attention over every page of `page_table`.

  Args:
    q: [S, N, D] one query per slot (RoPE applied).
    pool: [P, page, 2K, D]; page_table: [S, W] int32 (pages past kv_lens are masked).
    kv_lens: [S] int32, tokens in each slot's cache (the query's own included).
  Returns:
    [S, N, D] in q's dtype.
  """
  s, n, d = q.shape
  kv = pool[page_table]  # [S, W, page, 2K, D]
  kv = kv.reshape(s, -1, kv.shape[-2], d)
  k, v = kv[:, :, 0::2], kv[:, :, 1::2]  # [S, L, K, D]
  kv_heads = k.shape[2]
  q = q.reshape(s, kv_heads, n // kv_heads, d)
  scores = jnp.einsum("skgd,slkd->skgl", q, k, preferred_element_type=jnp.float32)
  valid = jnp.arange(k.shape[1])[None, :] < kv_lens[:, None]  # [S, L]
  scores = jnp.where(valid[:, None, None], scores / math.sqrt(d), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("skgl,slkd->skgd", probs, v).reshape(s, n, d).astype(q.dtype)


def kernel_decode_attention(q: Array, pool: Array, page_table: Array, kv_lens: Array,
                            pages_per_block: int = 8, queries_per_block: int = 8) -> Array:
  """The same with JAX's ragged paged attention kernel (TPU only), one query per slot.

  Block sizes are explicit: the kernel's tuned-size table reads the default device,
  which is not the slice when compiling ahead of time.
  """
  from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel  # TPU only
  s = q.shape[0]
  return kernel.ragged_paged_attention(
      q, pool, jnp.maximum(kv_lens, 1), page_table, jnp.arange(s + 1, dtype=jnp.int32),
      jnp.array([s], jnp.int32), sm_scale=1.0 / math.sqrt(q.shape[-1]),
      num_kv_pages_per_block=min(pages_per_block, page_table.shape[1]),
      num_queries_per_block=queries_per_block)


def slot_pages(slots: int, pages_per_slot: int) -> Array:
  """The page table of a slot-major pool: slot s owns pages s * W .. s * W + W - 1."""
  return jnp.arange(slots * pages_per_slot, dtype=jnp.int32).reshape(slots, pages_per_slot)


def slot_major_attention(q: Array, pool: Array, kv_lens: Array, pages_read: int) -> Array:
  """Decode attention over a slot-major pool (slot_pages), each slot reading its pages.

  q: [S, N, D]; pool: [S * W, page, 2K, D]; kv_lens: [S]. On TPU the kernel reads each
  slot's kv_len (under a mesh, in `jax.shard_map` over the slots and heads: Mosaic
  kernels are not partitioned automatically; each device's slots own its pages);
  elsewhere, and on TPU for a head_dim the kernel does not take (64: Llama 3.2 1B,
  SmolLM2), the first `pages_read` pages of every slot are gathered.
  """
  s, _, d = q.shape
  pages_per_slot = pool.shape[0] // s
  if sharding.platform() != "tpu" or d % KERNEL_HEAD_DIM:
    table = slot_pages(s, pages_per_slot)[:, :pages_read]
    return gathered_decode_attention(q, pool, table, kv_lens)

  def local(q, pool, kv_lens):
    return kernel_decode_attention(q, pool, slot_pages(q.shape[0], pages_per_slot), kv_lens)

  # Slots and kv heads are split only where both the queries and the pages split alike.
  axes = sharding.kernel_axes(s, pool.shape[2] // 2)
  if axes is None:
    return local(q, pool, kv_lens)
  rows, heads = axes
  spec = jax.sharding.PartitionSpec
  return jax.shard_map(local, in_specs=(spec(rows, heads, None), spec(rows, None, heads, None),
                                        spec(rows)),
                       out_specs=spec(rows, heads, None), check_vma=False)(q, pool, kv_lens)
