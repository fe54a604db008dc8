r"""Throughput of one GRPO-loss train step (forward + backward + AdamW) vs PyTorch.

  python -m experiments.bench.train_step --batch=4 --length=256
  python -m experiments.bench.train_step --model=tiny --batch=256 --length=128 \
      --micro_batch_rows=0,8 --torch=false

Model: the SmolLM2-135M architecture, or the quickstart's tiny student (random
weights; speed does not depend on their values); each --micro_batch_rows value
is timed (train.micro_batch_rows, 0 = one pass). Ours: the jitted step from
hybrid_rl.train.steps with the clipped policy-gradient loss on the last half of
each row. PyTorch: the same
transformers LlamaForCausalLM, the same batch and an equivalent clipped loss,
torch.optim.AdamW. MFU = 6 x params x tokens / time / measured matmul peak.
--parts also times the step's pieces on their own (the loss's forward pass,
forward + backward, the decoder body without the LM head and loss, the AdamW
update), to show where the step's time goes.
"""
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybrid_rl.algorithms import policy_gradient as pg
from hybrid_rl.eval import throughput
from hybrid_rl.models import transformer
from hybrid_rl.train import batches
from hybrid_rl.train import objectives
from hybrid_rl.train import steps

_BATCH = flags.DEFINE_integer("batch", 4, "Rows per step.")
_LENGTH = flags.DEFINE_integer("length", 256, "Tokens per row (half prompt, half response).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps (after one warm-up).")
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
  r = batch["mask"].shape[1]

  def body_loss(p):  # the decoder without the LM head: what the vocabulary costs is the rest
    model = nnx.merge(graphdef, p)
    hidden, _ = model(batch["tokens"], transformer.positions_from_valid(batch["valid"]),
                      batch["valid"])
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
  peak = throughput.measure_matmul_peak()
  n_params = cfg.num_params()
  flops = 6 * n_params * b * length
  print(f"device: {jax.devices()[0].device_kind}; {_MODEL.value} architecture "
        f"({n_params / 1e6:.1f}M params), batch {b} x {length} tokens, measured float32 matmul "
        f"peak {peak / 1e9:.1f} GFLOP/s")
  print("| impl | micro-batch rows | s/step | tokens/s | MFU |")
  print("|---|---|---|---|---|")
  ours_best = float("inf")
  for micro in map(int, _MICRO.value):
    state = steps.init_state(jax.tree.map(jnp.copy, params), optimizer, jax.random.PRNGKey(0))
    step = jax.jit(steps.make_train_step(loss_fn, optimizer, micro_batch_rows=micro),
                   donate_argnums=0)
    state, m = step(state, batch, jax.random.PRNGKey(0))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(_STEPS.value):
      state, m = step(state, batch, jax.random.PRNGKey(i))
    jax.block_until_ready(m)
    ours = (time.perf_counter() - t0) / _STEPS.value
    ours_best = min(ours_best, ours)
    print(f"| hybrid_rl (jax, {_DTYPE.value}) | {micro or b} | {ours:.2f} | "
          f"{b * length / ours:.0f} | {flops / ours / peak * 100:.1f}% |", flush=True)
  if _PARTS.value:
    print("\n| piece (ours, one pass) | ms |\n|---|---|")
    for name, sec in time_parts(graphdef, loss_fn, optimizer, params, batch, _STEPS.value).items():
      print(f"| {name} | {sec * 1e3:.0f} |", flush=True)
  if not _TORCH.value:
    return
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  hf_cfg = transformers.LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, tie_word_embeddings=True)
  hf = transformers.LlamaForCausalLM(hf_cfg).train()
  opt = torch.optim.AdamW(hf.parameters(), lr=1e-6)
  ids = torch.tensor(tokens)
  adv = torch.tensor(np.asarray(batch.advantages))[:, None]
  old = torch.full((b, r), -10.0)

  def torch_step():
    logits = hf(ids[:, :-1]).logits[:, -r:].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -r:, None])[..., 0]
    ratio = torch.exp(logp - old)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.28)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()

  torch_step()
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    torch_step()
  theirs = (time.perf_counter() - t0) / _STEPS.value
  print(f"| transformers (torch {torch.__version__}, float32) | {b} | {theirs:.2f} | "
        f"{b * length / theirs:.0f} | {flops / theirs / peak * 100:.1f}% |")
  print(f"speed-up over PyTorch (our fastest row): {theirs / ours_best:.2f}x")


if __name__ == "__main__":
  app.run(main)
