"""The memory settings change how activations are held, never the values: chunked attention,
layer rematerialization and chunked response logits give the plain path's values and
gradients (float32, CPU)."""
import dataclasses

from flax import nnx
import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.algorithms import distillation
from hybrid_rl.algorithms import policy_gradient
from hybrid_rl.models import transformer
from hybrid_rl.train import batches
from hybrid_rl.train import objectives
from hybrid_rl.train import steps

CFG = transformer.ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2,
                              num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)


def _close(a, b, tol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def _rows(batch=3, length=21, prompt_pad=(0, 4, 7), seed=0):
  """Left-padded rows: tokens [B, L], valid [B, L]."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, CFG.vocab_size, (batch, length)).astype(np.int32)
  valid = np.ones((batch, length), bool)
  for i, pad in enumerate(prompt_pad):
    valid[i, :pad] = False
  return jnp.asarray(tokens), jnp.asarray(valid)


@pytest.mark.parametrize("chunk", [4, 5, 21, 64])
def test_chunked_attention_equals_attention_values_and_gradients(chunk):
  rng = np.random.default_rng(1)
  q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32)
             for s in ((2, 13, 4, 8), (2, 13, 2, 8), (2, 13, 2, 8)))
  _, valid = _rows(2, 13, (0, 3))
  mask = jnp.tril(jnp.ones((13, 13), bool))[None] & valid[:, None, :]
  keep = valid[:, :, None, None]  # rows that attend somewhere
  plain = lambda q, k, v: jnp.sum(jnp.where(keep, transformer.attention(q, k, v, mask), 0) ** 2)
  chunked = lambda q, k, v: jnp.sum(jnp.where(
      keep, transformer.chunked_attention(q, k, v, mask, chunk), 0) ** 2)
  _close(jax.value_and_grad(plain, argnums=(0, 1, 2))(q, k, v),
         jax.value_and_grad(chunked, argnums=(0, 1, 2))(q, k, v))


def _loss_and_grads(cfg, tokens, valid, response_len=8, entropy_coef=0.0):
  """A GRPO loss through the model's objective: (loss, metrics, grads)."""
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, _ = nnx.split(model)
  params = steps.params_of(model)
  rng = np.random.default_rng(3)
  batch = batches.PGBatch(
      tokens=tokens, valid=valid,
      mask=jnp.asarray(rng.random((tokens.shape[0], response_len)) > 0.2),
      advantages=jnp.asarray(rng.normal(size=tokens.shape[0]), jnp.float32))
  pg = policy_gradient.PGConfig(entropy_coef=entropy_coef)
  loss_fn = objectives.grpo_objective(graphdef, pg, temperature=0.7)
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, None)
  return loss, metrics, grads


@pytest.mark.parametrize("settings", [
    dict(remat="full"), dict(remat="save_dots"), dict(attention_chunk=6),
    dict(logits_chunk=3), dict(remat="full", attention_chunk=8, logits_chunk=8),
])
def test_memory_settings_leave_the_grpo_loss_and_gradients_unchanged(settings):
  tokens, valid = _rows()
  plain = _loss_and_grads(CFG, tokens, valid, entropy_coef=0.01)
  other = _loss_and_grads(dataclasses.replace(CFG, **settings), tokens, valid, entropy_coef=0.01)
  _close(plain, other)


def test_chunked_head_equals_full_logits_logprobs_and_entropy():
  rng = np.random.default_rng(4)
  hidden = jnp.asarray(rng.normal(size=(2, 7, 16)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (2, 7)), jnp.int32)

  def full(hidden, head):
    logits = transformer.head_logits(hidden, head) / 0.7
    return transformer.gather_logprobs(logits, targets), distillation.entropy(logits)

  def chunked(hidden, head):
    return transformer.chunked_head(hidden, head, targets, 3, 0.7, with_entropy=True)

  _close(full(hidden, head), chunked(hidden, head))
  scalar = lambda f: lambda h, w: sum(jnp.sum(x * jnp.arange(1, 8)) for x in f(h, w))
  _close(jax.grad(scalar(full), argnums=(0, 1))(hidden, head),
         jax.grad(scalar(chunked), argnums=(0, 1))(hidden, head), tol=1e-4)


def test_remat_lowers_the_compiled_temporaries_of_a_gradient():
  """On XLA:CPU too, remat=full holds less for the backward pass than none."""
  tokens, valid = _rows(4, 64, (0, 0, 0, 0))
  cfg = dataclasses.replace(CFG, num_layers=4, hidden_size=64, intermediate_size=256)

  def temp_bytes(cfg):
    model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    def loss(params):
      m = nnx.merge(graphdef, params)
      return transformer.token_logprobs(m, tokens, valid).sum()
    return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(dataclasses.replace(cfg, remat="full")) < temp_bytes(cfg)


def test_decode_attention_as_dots_equals_the_fused_sum():
  rng = np.random.default_rng(5)
  q = jnp.asarray(rng.normal(size=(3, 1, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(3, 2, 11, 8)), jnp.float32) for _ in range(2))
  mask = jnp.asarray(rng.random((3, 1, 11)) > 0.3).at[:, :, 0].set(True)
  _close(transformer.cached_attention(q, k, v, mask, decode="sum"),
         transformer.cached_attention(q, k, v, mask, decode="dot"))


@pytest.mark.parametrize("remat, saves_projections", [("save_dots", True), ("full", False)])
def test_save_dots_keeps_the_layer_projections_for_the_backward(remat, saves_projections, capsys):
  """save_dots holds each layer's projection outputs (the gate / up activations among them),
  although `linear` hides its dot behind a written-out VJP; full holds only layer inputs."""
  tokens, valid = _rows()
  model = transformer.Transformer(dataclasses.replace(CFG, remat=remat), rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  loss = lambda p: transformer.token_logprobs(nnx.merge(graphdef, p), tokens, valid).sum()
  ad_checkpoint.print_saved_residuals(loss, params)
  saved = capsys.readouterr().out
  rows, length = tokens.shape
  gate_and_up = f"f32[{CFG.num_layers},{rows},{length - 1},{CFG.intermediate_size}]"
  assert saved.count(gate_and_up + " ") == (2 if saves_projections else 0), saved
