"""FLOP counts, a measured matmul peak and interleaved timing, for benchmarks."""
import statistics
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp


def call_seconds(fn, repeats: int, warmup: int = 0) -> list[float]:
  """Wall seconds of each of `repeats` calls of fn() (which must block until its result
  is ready), after `warmup` untimed calls (one compiles)."""
  for _ in range(warmup):
    fn()
  seconds = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - t0)
  return seconds


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_clock = {"seconds": 0.0, "listening": False}


def _count_compile(event: str, duration: float, **_):
  if event in _COMPILE_EVENTS:
    _compile_clock["seconds"] += duration


def compile_seconds() -> float:
  """Seconds JAX has spent tracing, lowering and compiling programs since the first call
  of this function: a running total, to subtract around the code measured (a program
  compiled inside a timed call is paid once per shape in a long run, every time in a
  short benchmark)."""
  if not _compile_clock["listening"]:
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    _compile_clock["listening"] = True
  return _compile_clock["seconds"]


def best_seconds(fn, repeats: int) -> float:
  """Shortest wall time of `repeats` calls of fn() (which must block until its result
  is ready); the shortest is the least disturbed by other work on the machine."""
  return min(call_seconds(fn, repeats))


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


def train_flops(cfg, rows: int, length: int, logit_positions: int) -> float:
  """Forward + backward FLOPs (3x the forward) of `rows` causal rows of `length`
  tokens whose LM head runs on `logit_positions` positions per row."""
  tokens = rows * length
  dense = 2 * cfg.num_params(include_embeddings=False) * tokens
  head = 2 * cfg.hidden_size * cfg.vocab_size * rows * logit_positions
  attention = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * (length / 2) * tokens
  return 3 * (dense + head + attention)


def interleaved(sides: Mapping[str, Callable[[], Any]], rounds: int, calls: int = 1,
                peak: Callable[[], float] = measure_matmul_peak) -> dict[str, list[float]]:
  """Times competing sides in turns (A B ..., A B ..., `rounds` times), so that a
  machine whose speed drifts slows every side alike.

  Args:
    sides: name -> a call that runs the work once and blocks until it is done
      (warmed up and compiled beforehand).
    rounds: turns of every side.
    calls: timed calls per side per turn (their mean is the turn's figure).
  Returns:
    {name: [seconds per call, one per round], "peak": [matmul FLOP/s measured at
    the start of each round]}.
  """
  out = {name: [] for name in sides}
  out["peak"] = []
  for _ in range(rounds):
    out["peak"].append(peak())
    for name, fn in sides.items():
      t0 = time.perf_counter()
      for _ in range(calls):
        fn()
      out[name].append((time.perf_counter() - t0) / calls)
  return out


def median_spread(values) -> dict:
  """{"median", "min", "max", "n"} of a list of measurements."""
  values = list(values)
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "n": len(values)}
