"""FLOP counts and a measured matmul peak, for MFU figures in benchmarks."""
import time

import jax
import jax.numpy as jnp


def best_seconds(fn, repeats: int) -> float:
  """Shortest wall time of `repeats` calls of fn() (which must block until its result
  is ready); the shortest is the least disturbed by other work on the machine."""
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def measure_matmul_peak(n: int = 2048, dtype=jnp.float32) -> float:
  """FLOP/s of a square [n, n] matmul on the default device, best of 5 after compiling."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  return 2 * n**3 / best_seconds(lambda: f(a).block_until_ready(), 5)


def forward_flops(cfg, tokens: int, context: int) -> float:
  """Forward FLOPs of a transformer for `tokens` tokens attending to ~`context` keys each."""
  dense = 2 * cfg.num_params(include_embeddings=False) * tokens
  head = 2 * cfg.hidden_size * cfg.vocab_size * tokens
  attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context * tokens
  return dense + head + attention
