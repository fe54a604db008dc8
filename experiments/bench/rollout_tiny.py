r"""The quickstart's rollout shape: the static sampler vs the continuous engine on its
tiny model, interleaved.

  python -m experiments.bench.rollout_tiny --rounds=5 --out=results/bench_rollout/tiny.json

configs/quickstart.py's policy (4 layers, hidden 128, randomly initialised), 32 random
prompts of 20-48 tokens x 8 samples at T=1, 80 new tokens. An untrained policy never
emits EOS, so the --stops tokens it draws most often stop the rows instead: lengths
spread over 1..80 as a trained policy's do. Each side's first call (compilation
included) is reported apart from the warm calls, since a quickstart stage is a fresh
process that samples 10-50 times.
"""
import json
import os
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import numpy as np

from configs import quickstart
from hybrid_rl.eval import throughput
from hybrid_rl.models import transformer
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import rollouts
from hybrid_rl.sampling import sampler

MODEL_FIELDS = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "head_dim", "tie_embeddings", "rope_theta")


def main(argv):
  del argv
  config = quickstart.get_config()
  cfg = transformer.ModelConfig(vocab_size=config.tokenizer.vocab_size,
                                **{k: config.model[k] for k in MODEL_FIELDS})
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  rows = [list(rng.integers(3, cfg.vocab_size, size=n)) for n in rng.integers(20, 49, size=32)]
  tokens, valid = sampler.left_pad(rows, 0, config.data.max_prompt_len)
  new, samples = config.sampling.max_new_tokens, config.grpo.num_samples
  free = sampler.generate(model, tokens, valid, jax.random.PRNGKey(99),
                          sampler.SamplingParams(max_new_tokens=new, num_samples=samples))
  ids, counts = np.unique(np.asarray(free.tokens), return_counts=True)
  stops = tuple(int(i) for i in ids[np.argsort(-counts)][:_STOPS.value])
  sp = sampler.SamplingParams(max_new_tokens=new, num_samples=samples, stop_token_ids=stops)
  engine = rollouts.default_slots(continuous.EngineSettings("continuous"), len(rows) * samples, 1)
  sides = {
      "static": lambda seed: sampler.generate(model, tokens, valid, jax.random.PRNGKey(seed), sp),
      "continuous": lambda seed: continuous.generate(model, tokens, valid,
                                                     jax.random.PRNGKey(seed), sp, engine)}
  lengths = {name: [] for name in sides}
  first = {}
  for name, fn in sides.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn(1000))
    first[name] = time.perf_counter() - t0

  def timed(name):
    def call():
      out = jax.block_until_ready(sides[name](len(lengths[name])))
      lengths[name].append(np.asarray(out.lengths))
    return call

  times = throughput.interleaved({name: timed(name) for name in sides}, _ROUNDS.value)
  peak = throughput.median_spread(np.array(times.pop("peak")) / 1e9)
  report = {"rows": len(rows) * samples, "max_new_tokens": new, "slots": engine.slots,
            "stop_tokens": len(stops), "peak_gflops": peak, "sides": {}}
  for name, seconds in times.items():
    all_lengths = np.concatenate(lengths[name])
    report["sides"][name] = {"first_call_seconds": first[name],
                             "warm_seconds": throughput.median_spread(seconds),
                             "mean_length": float(all_lengths.mean()),
                             "at_limit": float((all_lengths == new).mean())}
    print(f"{name:10s} first call {first[name]:5.2f} s; warm {np.median(seconds):.3f} s "
          f"[{min(seconds):.3f}, {max(seconds):.3f}]; mean length {all_lengths.mean():.1f}, "
          f"{100 * (all_lengths == new).mean():.0f}% at the limit")
  ratio = np.median(times["static"]) / np.median(times["continuous"])
  print(f"warm static / continuous: {ratio:.2f}x; matmul peak {peak['median']:.0f} GFLOP/s")
  report["warm_ratio_static_continuous"] = ratio
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  _ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timed turns of both sides.")
  _STOPS = flags.DEFINE_integer("stops", 12, "Most frequent tokens that stop a row.")
  _OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the figures.")
  app.run(main)
