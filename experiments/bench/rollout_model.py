r"""What bounds the continuous engine's gain on this machine: a decode-step cost model fit
to measured decode calls, then the static sampler's, the engine's and an ideal engine's
schedules priced with it on measured response lengths.

  python -m experiments.bench.rollout_model --lengths=results/bench_rollout/summary.json \
      --out=results/bench_rollout/model.json

One decode step of A slots, each attending over R cache positions, costs on XLA:CPU
  seconds(A, R) = a + b * A + c * A * R
(a: the weights read and the LM head, b: each slot's matmuls, c: each cached token's
keys and values), fit by least squares to continuous.decode_jit calls on
SmolLM2-135M-Instruct over a grid of A and R (every slot live, --decode_steps steps a
call, the median of --repeats calls after a compiling one). Priced with it, for
--requests responses whose lengths are drawn from the benchmark's measured ones:
  static      one batch of every request, max(length) steps, each reading P + N per row;
  continuous  continuous.generate's schedule: slots refilled at host checks, each call
              reading up to the longest live slot (read_lengths buckets), only the
              first slots holding live requests decoded once none waits (one of
              active_slot_count's sizes, --active_buckets);
  ideal       the same schedule with each slot reading exactly its own length and no
              free or stopped slot computed: what a ragged per-slot kernel would reach.
Prefill is left out of every side (one pass over the prompts, the same for all).
"""
import json
import os
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.eval import throughput
from hybrid_rl.models import gguf_io
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import sampler

def measure_step_seconds(slots: list[int], reads: list[int], steps: int, repeats: int
                         ) -> list[dict]:
  """Seconds per decode step of continuous.decode_jit at each (slots, read length)."""
  model = gguf_io.load_gguf(gguf_io.smollm2_gguf_path())
  graphdef, state = nnx.split(model)
  sp = sampler.SamplingParams(max_new_tokens=1 << 30, temperature=1.0)  # no slot stops
  rows = []
  for a in slots:
    for r in reads:
      cache = continuous.init_cache(model.cfg, a, r, "slots", 16)
      logits = jnp.zeros((a, model.cfg.vocab_size), jnp.float32)
      kv_len = jnp.full((a,), r - steps - 1, jnp.int32)
      times = []
      for _ in range(repeats + 1):
        t0 = time.perf_counter()
        c = jax.block_until_ready(continuous.decode_jit(
            graphdef, sp, r, steps, state, cache, logits, kv_len, jnp.zeros(a, jnp.int32),
            jnp.ones(a, bool), jnp.arange(a, dtype=jnp.int32), jax.random.PRNGKey(0)))
        times.append(time.perf_counter() - t0)
        cache, logits = c["cache"], c["logits"]
      rows.append({"slots": a, "read": r, "step_seconds": float(np.median(times[1:])) / steps})
      print(f"A={a:3d} R={r:4d}: {1e3 * rows[-1]['step_seconds']:7.1f} ms/step", flush=True)
  return rows


def fit(rows: list[dict]) -> dict:
  """Least squares seconds = a + b * A + c * A * R, with the worst relative residual."""
  x = np.array([[1.0, r["slots"], r["slots"] * r["read"]] for r in rows])
  y = np.array([r["step_seconds"] for r in rows])
  coef = np.linalg.lstsq(x, y, rcond=None)[0]
  return {"a": coef[0], "b": coef[1], "c": coef[2],
          "max_relative_residual": float(np.max(np.abs(x @ coef - y) / y))}


def price(lengths: np.ndarray, prompt: int, new: int, slots: int, steps: int, buckets: int,
          cost: dict, active_buckets: int = continuous.EngineSettings.active_buckets) -> dict:
  """Seconds of the static, continuous and ideal schedules (module docstring)."""
  step = lambda a, reads: cost["a"] + cost["b"] * a + cost["c"] * reads
  static = int(lengths.max()) * step(len(lengths), len(lengths) * (prompt + new))
  schedule = continuous.simulate_schedule(lengths, prompt, slots, steps, 1,
                                          continuous.read_lengths(prompt + new, buckets),
                                          active_buckets)
  live, active = schedule["live"], schedule["active"]
  engine = float(step(active, active * schedule["read"]).sum())
  ideal = float(step(live, schedule["cache"] - (slots - live)).sum())  # only live slots read
  return {"static": static, "continuous": engine, "ideal": ideal,
          "ratio_continuous_static": static / engine, "ratio_ideal_static": static / ideal}


def main(argv):
  del argv
  with open(_LENGTHS.value) as f:
    bench = json.load(f)
  measured = np.asarray(bench["lengths"])
  prompt, new = bench["prompt_width"], bench["max_new_tokens"]
  peak = throughput.measure_matmul_peak() / 1e9
  rows = measure_step_seconds([int(a) for a in _SLOTS.value], [int(r) for r in _READS.value],
                              _DECODE_STEPS.value, _REPEATS.value)
  cost = fit(rows)
  print(f"step seconds = {cost['a']:.4f} + {cost['b']:.5f} A + {cost['c']:.3e} A R "
        f"(worst residual {100 * cost['max_relative_residual']:.1f}%); matmul peak "
        f"{peak:.0f} GFLOP/s")
  prices = []
  rng = np.random.default_rng(0)
  for requests in (int(n) for n in _REQUESTS.value):
    lengths = measured if requests == len(measured) else rng.choice(measured, requests)
    for slots in (int(s) for s in _ENGINE_SLOTS.value):
      if slots > requests:
        continue
      p = price(lengths, prompt, new, slots, _DECODE_STEPS.value, 8, cost,
                _ACTIVE_BUCKETS.value)
      prices.append({"requests": requests, "slots": slots, **p})
      print(f"{requests:4d} requests, {slots:3d} slots: static {p['static']:6.1f} s, "
            f"continuous {p['continuous']:6.1f} s ({p['ratio_continuous_static']:.2f}x), "
            f"ideal {p['ideal']:6.1f} s ({p['ratio_ideal_static']:.2f}x)")
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump({"lengths_from": _LENGTHS.value, "prompt_width": prompt, "max_new_tokens": new,
                 "decode_steps": _DECODE_STEPS.value, "peak_gflops": peak, "grid": rows,
                 "cost": cost, "prices": prices}, f, indent=1)


if __name__ == "__main__":
  # Flags only when run as a script: the tests import this module.
  _LENGTHS = flags.DEFINE_string("lengths", "results/bench_rollout/summary.json",
                                 "A bench.rollout summary.json: lengths, prompt_width, "
                                 "max_new_tokens.")
  _SLOTS = flags.DEFINE_list("fit_slots", ["8", "32", "64"], "Slot counts A of the fit.")
  _READS = flags.DEFINE_list("fit_reads", ["96", "384", "672"], "Read lengths R of the fit.")
  _DECODE_STEPS = flags.DEFINE_integer("decode_steps", 16, "Steps per decode call.")
  _ACTIVE_BUCKETS = flags.DEFINE_integer("active_buckets",
                                         continuous.EngineSettings.active_buckets,
                                         "The engine's active_buckets "
                                         "(1: the power-of-two sizes before 2026-12-06).")
  _REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per grid point (median).")
  _REQUESTS = flags.DEFINE_list("requests", ["64", "256"], "Request counts to price.")
  _ENGINE_SLOTS = flags.DEFINE_list("engine_slots", ["32", "64"], "Engine slot counts to price.")
  _OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the fit and the prices.")
  app.run(main)
