r"""One GRPO-loss train step (forward + backward + AdamW) vs PyTorch, interleaved.

  python -m experiments.bench.train_step --batch=4 --length=256 --rounds=3 \
      --out=results/bench_speed/train_step.json
  python -m experiments.bench.train_step --model=tiny --batch=256 --length=128 \
      --micro_batch_rows=0,8 --torch=false

Model: the SmolLM2-135M architecture, or the quickstart's tiny student (random
weights; speed does not depend on their values). Each row is half prompt, half
response; the clipped policy-gradient loss reads the response's r positions.
  ours                the jitted step of hybrid_rl.train.steps (logits on the r response
                      positions only), once per --micro_batch_rows value;
  torch               transformers' LlamaForCausalLM, the same batch and loss, at its
                      best ordinary settings: logits_to_keep=r (the LM head on the
                      response positions only), use_cache=False, AdamW(fused=True);
  torch_compile       the same with the model under torch.compile (--torch_compile).
The sides take turns (--rounds of --steps timed steps each, after a warm-up step), the
float32 matmul peak measured at the start of each turn; figures are medians over turns
with their range. MFU counts the work that ran: forward + backward (3x the forward) of
the decoder on every token, causal attention, and the LM head on r positions a row
(throughput.train_flops). --parts also times the step's pieces on their own.
"""
import os
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench import summarize
from hybrid_rl.algorithms import policy_gradient as pg
from hybrid_rl.eval import throughput
from hybrid_rl.models import transformer
from hybrid_rl.train import batches
from hybrid_rl.train import objectives
from hybrid_rl.train import steps

_BATCH = flags.DEFINE_integer("batch", 4, "Rows per step.")
_LENGTH = flags.DEFINE_integer("length", 256, "Tokens per row (half prompt, half response).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per side per round (after a warm-up).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved turns of every side.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "Also time torch.compile'd PyTorch.")
_OUT = flags.DEFINE_string("out", "", "If set, a JSON file for the figures.")
_DTYPE = flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "Our compute dtype.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch step.")
_MODEL = flags.DEFINE_enum("model", "smollm2", ["smollm2", "tiny"], "Architecture.")
_MICRO = flags.DEFINE_list("micro_batch_rows", ["0"], "Micro-batch caps to time (0 = one pass).")
_PARTS = flags.DEFINE_bool("parts", False, "Also time the step's pieces on their own.")


def _seconds(fn, *args, repeats: int) -> float:
  """Mean seconds of a jitted call after one warm-up (compilation) call."""
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t0) / repeats


def time_parts(graphdef, loss_fn, optimizer, params, batch, repeats: int) -> dict:
  """Seconds of the train step's pieces, each jitted on its own."""
  r = batch.mask.shape[1]

  def body_loss(p):  # the decoder without the LM head: what the vocabulary costs is the rest
    model = nnx.merge(graphdef, p)
    hidden, _ = model(batch.tokens, transformer.positions_from_valid(batch.valid),
                      batch.valid)
    return jnp.mean(hidden[:, -r:] ** 2)

  loss = lambda p: loss_fn(p, batch, None)[0]
  opt_state = optimizer.init(params)
  ones = jax.tree.map(jnp.ones_like, params)
  return {
      "forward (loss)": _seconds(jax.jit(loss), params, repeats=repeats),
      "forward + backward (loss)": _seconds(jax.jit(jax.grad(loss)), params, repeats=repeats),
      "forward + backward, body without LM head": _seconds(jax.jit(jax.grad(body_loss)), params,
                                                          repeats=repeats),
      "AdamW update": _seconds(jax.jit(lambda g, s, p: optimizer.update(g, s, p)), ones,
                               opt_state, params, repeats=repeats),
  }

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                    num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_embeddings=True)


TINY = dict(vocab_size=512, hidden_size=128, intermediate_size=384, num_layers=4, num_heads=4,
            num_kv_heads=2, head_dim=32, tie_embeddings=True)  # configs/default.py:tiny


def ours_step(cfg, graphdef, loss_fn, optimizer, params, batch, micro: int):
  """A call that runs one of our jitted steps (compiled here) and blocks."""
  state = {"s": steps.init_state(jax.tree.map(jnp.copy, params), optimizer,
                                 jax.random.PRNGKey(0))}
  step = jax.jit(steps.make_train_step(loss_fn, optimizer, micro_batch_rows=micro),
                 donate_argnums=0)

  def run():
    state["s"], m = step(state["s"], batch, jax.random.PRNGKey(0))
    jax.block_until_ready(m)
  run()
  return run


def torch_step(cfg, tokens: np.ndarray, advantages: np.ndarray, r: int, compiled: bool):
  """A call that runs one PyTorch step at its best ordinary settings (module docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, tie_word_embeddings=True,
      use_cache=False)
  hf = transformers.LlamaForCausalLM(hf_cfg).train()
  opt = torch.optim.AdamW(hf.parameters(), lr=1e-6, fused=True)
  forward = torch.compile(hf) if compiled else hf
  ids = torch.tensor(tokens)
  adv = torch.tensor(advantages)[:, None]
  old = torch.full((ids.shape[0], r), -10.0)

  def run():
    logits = forward(ids[:, :-1], logits_to_keep=r, use_cache=False).logits.float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -r:, None])[..., 0]
    ratio = torch.exp(logp - old)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.28)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
  run()  # warm-up (and compilation)
  return run, torch.__version__


def main(argv):
  del argv
  b, length = _BATCH.value, _LENGTH.value
  r = length // 2
  cfg = transformer.ModelConfig(**(SMOLLM2_135M if _MODEL.value == "smollm2" else TINY))
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, _ = nnx.split(model)
  loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(epsilon_high=0.28),
                                      compute_dtype=_DTYPE.value)
  optimizer = optax.adamw(1e-6)
  params = steps.params_of(model)
  del model
  rng = np.random.RandomState(0)
  tokens = rng.randint(0, cfg.vocab_size, (b, length))
  batch = batches.PGBatch(
      tokens=jnp.asarray(tokens, jnp.int32), valid=jnp.ones((b, length), bool),
      mask=jnp.ones((b, r), bool), old_logprobs=jnp.full((b, r), -10.0),
      advantages=jnp.asarray(rng.randn(b), jnp.float32))
  flops = throughput.train_flops(cfg, b, length, r)
  sides, settings = {}, {}
  for micro in map(int, _MICRO.value):
    name = f"ours (micro-batch rows {micro or b})"
    sides[name] = ours_step(cfg, graphdef, loss_fn, optimizer, params, batch, micro)
    settings[name] = f"jax {jax.__version__}, {_DTYPE.value}, logits on r positions"
  if _TORCH.value:
    for compiled in (False, True) if _TORCH_COMPILE.value else (False,):
      name = "torch_compile" if compiled else "torch"
      try:
        sides[name], version = torch_step(cfg, tokens, np.asarray(batch.advantages), r, compiled)
        settings[name] = (f"torch {version}, float32, logits_to_keep={r}, use_cache=False, "
                          "AdamW(fused=True)" + (", torch.compile" if compiled else ""))
      except Exception as e:  # pylint: disable=broad-except
        print(f"NOTE {name} not timed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
  print(f"device: {jax.devices()[0].device_kind}; {_MODEL.value} architecture "
        f"({cfg.num_params() / 1e6:.1f}M params), batch {b} x {length} tokens ({b * length} "
        f"tokens, logits on {r} positions a row), {flops / 1e9:.0f} GFLOP a step; "
        f"{_ROUNDS.value} interleaved rounds of {_STEPS.value} steps, median [min, max]")
  times = throughput.interleaved(sides, _ROUNDS.value, calls=_STEPS.value)
  peak = throughput.median_spread([x / 1e9 for x in times.pop("peak")])
  print("| side | settings | s/step | tokens/s | MFU |")
  print("|---|---|---|---|---|")
  out = {"batch": b, "length": length, "logit_positions": r, "gflop_per_step": flops / 1e9,
         "peak_gflops": peak, "sides": {}}
  for name, secs in times.items():
    m = throughput.median_spread(secs)
    mfu = flops / m["median"] / (peak["median"] * 1e9)
    out["sides"][name] = {"settings": settings[name], "seconds": m, "mfu": mfu}
    print(f"| {name} | {settings[name]} | {m['median']:.2f} [{m['min']:.2f}, {m['max']:.2f}] | "
          f"{b * length / m['median']:.0f} | {mfu * 100:.1f}% |", flush=True)
  print(f"matmul peak {peak['median']:.0f} [{peak['min']:.0f}, {peak['max']:.0f}] GFLOP/s")
  ours = min(v["seconds"]["median"] for k, v in out["sides"].items() if k.startswith("ours"))
  for name, v in out["sides"].items():
    if not name.startswith("ours"):
      print(f"speed-up of our fastest row over {name}: {v['seconds']['median'] / ours:.2f}x")
  if _PARTS.value:
    print("\n| piece (ours, one pass) | ms |\n|---|---|")
    for name, sec in time_parts(graphdef, loss_fn, optimizer, params, batch, _STEPS.value).items():
      print(f"| {name} | {sec * 1e3:.0f} |", flush=True)
  summarize.save(_OUT.value, out)


if __name__ == "__main__":
  app.run(main)
