"""2048-square matmul rates on the CPU: float32, and bfloat16 with a bfloat16 or float32 result.

  JAX_PLATFORMS=cpu python results/bench_speed/outputs/bf16_matmul.py
"""
import time

import jax
import jax.numpy as jnp


def gflops(f, a, b, repeats=7):
  jax.block_until_ready(f(a, b))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - t)
  return 2 * a.shape[0] ** 3 / sorted(times)[repeats // 2] / 1e9


n = 2048
for turn in range(3):
  for dtype, out in ((jnp.float32, None), (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32)):
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y, out=out: jnp.dot(x, y, preferred_element_type=out))
    print(f"turn {turn}: {jnp.dtype(dtype).name} inputs, {jnp.dtype(out or dtype).name} result: "
          f"{gflops(f, a, a):.0f} GFLOP/s", flush=True)
