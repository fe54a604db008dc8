"""The ceiling of a decode step on this CPU: GFLOP/s of one decode step's matmul shapes
(SmolLM2-135M, M = batch rows against each weight matrix) in JAX and PyTorch, against
the square-matmul peak the benchmarks report MFU by.

  python -m experiments.bench.decode_matmuls
"""

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.eval import throughput

HIDDEN, INTER, VOCAB, LAYERS = 576, 1536, 49152, 30
# One layer's weight matrices (q, k, v, o, gate, up, down) and the tied LM head, as [K, N].
SHAPES = [(HIDDEN, 576), (HIDDEN, 192), (HIDDEN, 192), (576, HIDDEN), (HIDDEN, INTER),
          (HIDDEN, INTER), (INTER, HIDDEN)]


def best(fn, repeats=20):
  fn()  # compiles
  return throughput.best_seconds(fn, repeats)


def main():
  import torch
  torch.set_num_threads(2)
  peak = throughput.measure_matmul_peak()
  print(f"square float32 matmul peak (JAX): {peak / 1e9:.0f} GFLOP/s")
  print("| rows M | layer matmuls, JAX GFLOP/s | torch GFLOP/s | LM head, JAX GFLOP/s | torch GFLOP/s "
        "| matmul floor of one decode step, JAX ms |")
  print("|---|---|---|---|---|---|")
  rng = np.random.RandomState(0)
  for m in (16, 64):
    x = {k: rng.randn(m, k).astype(np.float32) for k in (HIDDEN, INTER)}
    ws = [rng.randn(k, n).astype(np.float32) for k, n in SHAPES]
    head = rng.randn(HIDDEN, VOCAB).astype(np.float32)
    layer_flops = sum(2 * m * k * n for k, n in SHAPES)
    head_flops = 2 * m * HIDDEN * VOCAB
    jx = {k: jnp.asarray(v) for k, v in x.items()}
    jws, jhead = [jnp.asarray(w) for w in ws], jnp.asarray(head)
    layer = jax.jit(lambda xs, ws: [xs[w.shape[0]] @ w for w in ws])
    lm = jax.jit(lambda x, h: x @ h)
    t_layer = best(lambda: jax.block_until_ready(layer(jx, jws)))
    t_head = best(lambda: jax.block_until_ready(lm(jx[HIDDEN], jhead)))
    tx = {k: torch.from_numpy(v) for k, v in x.items()}
    tws, thead = [torch.from_numpy(w) for w in ws], torch.from_numpy(head)
    with torch.no_grad():
      tt_layer = best(lambda: [tx[w.shape[0]] @ w for w in tws])
      tt_head = best(lambda: tx[HIDDEN] @ thead)
    print(f"| {m} | {layer_flops / t_layer / 1e9:.0f} | {layer_flops / tt_layer / 1e9:.0f} | "
          f"{head_flops / t_head / 1e9:.0f} | {head_flops / tt_head / 1e9:.0f} | "
          f"{(LAYERS * t_layer + t_head) * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
  main()
