"""Causal self-attention for training through JAX's splash attention kernel (TPU).

`jax.experimental.pallas.ops.tpu.splash_attention` computes the [T, T] product in
blocks without materializing the scores, forward and backward (its own VJP). Padding is
a segment id (0 pad, 1 token): a token attends to the tokens at or before it, a pad to
the pads before it (those rows are never read). Grouped KV heads run as MQA kernels, one
per KV head. Off TPU the kernel runs in Pallas' interpret mode (slow: for tests).
"""
import math

import jax
import jax.numpy as jnp

from hybrid_rl.parallel import sharding

Array = jax.Array
BLOCK = 512  # query and key block of every pass; sequences are padded to a multiple


def _libs():
  # Imported here: Pallas' TPU modules are needed only by models that use the kernel.
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel  # pylint: disable=g-import-not-at-top
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask  # pylint: disable=g-import-not-at-top
  return splash_attention_kernel, splash_attention_mask


def _kernel(length: int, groups: int, block: int, interpret: bool):
  kernel_lib, mask_lib = _libs()
  sizes = kernel_lib.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                                block_q_dkv=block, block_kv_dkv=block,
                                block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  mask = mask_lib.MultiHeadMask([mask_lib.CausalMask((length, length))] * groups)
  return kernel_lib.make_splash_mqa(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                    interpret=interpret)


def _local(q: Array, k: Array, v: Array, valid: Array, interpret: bool) -> Array:
  b, t, n, d = q.shape
  kv_heads = k.shape[2]
  block = min(BLOCK, -(-t // 128) * 128)
  pad = -t % block
  widen = lambda x: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
  q, k, v, valid = widen(q), widen(k), widen(v), widen(valid)
  length = t + pad
  kernel = _kernel(length, n // kv_heads, block, interpret)
  q = (q / math.sqrt(d)).reshape(b, length, kv_heads, n // kv_heads, d).transpose(0, 2, 3, 1, 4)
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, D]
  segments = valid.astype(jnp.int32)

  def one(q1, k1, v1, seg):  # q1: [G, T, D]; k1, v1: [T, D]
    return kernel(q1, k1, v1, segment_ids=_libs()[0].SegmentIds(seg, seg))

  out = jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, None)))(q, k, v, segments)  # [B, K, G, T, D]
  return out.transpose(0, 3, 1, 2, 4).reshape(b, length, n, d)[:, :t].astype(q.dtype)


def splash_attention(q: Array, k: Array, v: Array, valid: Array) -> Array:
  """Causal attention within each row's valid tokens.

  Args:
    q: [B, T, N, D]; k, v: [B, T, K, D] (RoPE applied).
    valid: [B, T] bool, False on padding.
  Returns:
    [B, T, N, D] in q's dtype; rows of padding hold values no caller reads.
  Under a mesh on TPU the kernel runs in `jax.shard_map` over the rows (data x fsdp) and
  KV heads (tensor), where they divide: Mosaic kernels are not partitioned automatically.
  """
  interpret = sharding.platform() != "tpu"
  axes = None if interpret else sharding.kernel_axes(q.shape[0], k.shape[2])
  if axes is None:
    return _local(q, k, v, valid, interpret)
  rows, heads = axes
  spec = jax.sharding.PartitionSpec
  heads_spec = spec(rows, None, heads, None)
  return jax.shard_map(lambda q, k, v, m: _local(q, k, v, m, False),
                       in_specs=(heads_spec, heads_spec, heads_spec, spec(rows, None)),
                       out_specs=heads_spec, check_vma=False)(q, k, v, valid)
