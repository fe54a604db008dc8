r"""Why the continuous engine keeps each slot's KV cache contiguous on XLA:CPU.

  python -m experiments.bench.kv_gather --out=results/bench_rollout/kv_gather.json

One decode step's keys of one layer at SmolLM2-135M's shape (64 slots x 672 positions,
3 KV heads of 64, float32: 66 MB) read three ways, interleaved, --rounds turns:
  attention_contiguous  the decode attention product over a [S, K, L, D] cache (the
                        static sampler's and the continuous engine's layout);
  gather_pages          the same keys fetched through a shuffled page table (pages of
                        --page_size tokens), the gather alone, as a paged cache needs;
  read_contiguous       a reduction that reads the same bytes once.
Figures are milliseconds per call (median, min, max) and GB/s of the 66 MB read.
"""
import json
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.eval import throughput
from hybrid_rl.models import transformer

_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved turns of every side.")
_PAGE_SIZE = flags.DEFINE_integer("page_size", 16, "Tokens per page.")
_OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the figures.")

SLOTS, KV_HEADS, GROUPS, LENGTH, HEAD_DIM = 64, 3, 3, 672, 64


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  page = _PAGE_SIZE.value
  pages = LENGTH // page
  cache = jnp.asarray(rng.normal(size=(SLOTS, KV_HEADS, LENGTH, HEAD_DIM)), jnp.float32)
  pool = jnp.asarray(rng.normal(size=(SLOTS * pages, page * KV_HEADS * HEAD_DIM)), jnp.float32)
  table = jnp.asarray(rng.permutation(SLOTS * pages).reshape(SLOTS, pages), jnp.int32)
  q = jnp.asarray(rng.normal(size=(SLOTS, 1, KV_HEADS * GROUPS, HEAD_DIM)), jnp.float32)
  mask = jnp.ones((SLOTS, 1, LENGTH), bool)
  calls = {
      "attention_contiguous": jax.jit(
          lambda q, c: transformer.cached_attention(q, c, c, mask, 0, "dot")),
      "gather_pages": jax.jit(lambda p: p[table]),
      "read_contiguous": jax.jit(lambda c: c.sum(-1)),
  }
  args = {"attention_contiguous": (q, cache), "gather_pages": (pool,),
          "read_contiguous": (cache,)}
  sides = {name: (lambda f=f, a=args[name]: jax.block_until_ready(f(*a)))
           for name, f in calls.items()}
  for run in sides.values():
    run()
  times = throughput.interleaved(sides, _ROUNDS.value, calls=5)
  megabytes = cache.size * 4 / 1e6
  figures = {"shape": {"slots": SLOTS, "kv_heads": KV_HEADS, "length": LENGTH,
                       "head_dim": HEAD_DIM, "page_size": page}, "megabytes": megabytes,
             "peak_gflops": throughput.median_spread(np.array(times.pop("peak")) / 1e9)}
  for name, seconds in times.items():
    ms = throughput.median_spread(np.array(seconds) * 1e3)
    figures[name] = {"ms": ms, "gb_per_s": megabytes / ms["median"]}
    print(f"{name:22s} {ms['median']:7.2f} ms ({ms['min']:.2f}-{ms['max']:.2f})  "
          f"{megabytes / ms['median']:5.1f} GB/s")
  print(f"matmul peak {figures['peak_gflops']['median']:.0f} GFLOP/s")
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(figures, f, indent=1)


if __name__ == "__main__":
  app.run(main)
