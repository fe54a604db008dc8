"""experiments/bench/summarize: ratios against each side's fastest row, from the JSON the
benchmarks write."""
import json

from experiments.bench import summarize


def _side(median):
  return {"seconds": {"median": median, "min": median * 0.9, "max": median * 1.1, "n": 3}}


def test_ratios_take_the_fastest_row_of_each_side(tmp_path):
  decode = [{"batch": 16, "peak_gflops": {"median": 300.0}, "sides": {
      "ours": {**_side(2.0), "tokens_generated": 2048},
      "transformers": {**_side(6.0), "tokens_generated": 2048},
      "transformers_static": {**_side(5.0), "tokens_generated": 2048}}}]
  train = {"peak_gflops": {"median": 300.0}, "sides": {
      "ours (micro-batch rows 4)": _side(3.0), "ours (micro-batch rows 2)": _side(2.5),
      "torch": _side(5.0), "torch_compile": _side(4.0)}}
  floor = {"turns": {"False": {"median_floor_multiple": 4.0},
                     "True": {"median_floor_multiple": 2.0}}}
  for name, obj in (("decode", decode), ("train_step", train), ("train_floor", floor)):
    (tmp_path / f"{name}.json").write_text(json.dumps(obj))
  out = summarize.summarize(str(tmp_path))
  assert out["decode_b16"]["peer"]["row"] == "transformers_static"
  assert out["decode_b16"]["ratio"] == 2.5
  assert out["train_step"]["ours"]["row"] == "ours (micro-batch rows 2)"
  assert out["train_step"]["peer"]["row"] == "torch_compile"
  assert out["train_step"]["ratio"] == 4.0 / 2.5
  assert out["smollm2_train_floor_multiple"] == 2.0
  assert "rl_step" not in out  # not run: absent, not invented
  assert json.loads((tmp_path / "summary.json").read_text()) == out
  table = summarize.markdown(out)
  assert "| decode_b16 | 2.00 [1.80, 2.20] | transformers_static: 5.00 [4.50, 5.50] | 2.50x | >= 2.0x | yes |" in table
  assert "| train_step |" in table and "| 1.60x | >= 1.5x | yes |" in table
  assert "| decode_b64 | not run |" in table and "| rl_step | not run |" in table


def test_call_seconds_times_only_the_calls_after_the_warmup():
  from hybrid_rl.eval import throughput
  calls = []
  seconds = throughput.call_seconds(lambda: calls.append(len(calls)), 3, warmup=2)
  assert len(calls) == 5 and len(seconds) == 3 and min(seconds) >= 0
  assert throughput.best_seconds(lambda: calls.append(0), 4) >= 0 and len(calls) == 9


def test_compile_seconds_count_new_programs_only():
  """The running total grows when a new shape compiles, not when a compiled one runs."""
  import jax
  import jax.numpy as jnp
  from hybrid_rl.eval import throughput
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
  start = throughput.compile_seconds()
  f(jnp.ones((33, 7))).block_until_ready()
  compiled = throughput.compile_seconds()
  assert compiled > start
  f(jnp.ones((33, 7))).block_until_ready()
  assert throughput.compile_seconds() == compiled
  f(jnp.ones((34, 7))).block_until_ready()
  assert throughput.compile_seconds() > compiled
