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
    dict(train_attention="splash"), dict(train_attention="splash", remat="full"),
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


@pytest.mark.parametrize("slots", [1100, 1031, 2062])
def test_decode_scores_in_rows_equal_the_dots_past_the_row_limit(slots):
  """Above DECODE_SCORE_ROW slots the fused sum splits its scores into rows (of 220, 1 -
  a prime, unsplit - and 2 slots here); the result is the same attention."""
  assert transformer.decode_score_block(slots) == {1100: 220, 1031: 1, 2062: 2}[slots]
  rng = np.random.default_rng(slots)
  q = jnp.asarray(rng.normal(size=(2, 1, 4, 8)), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(2, 2, slots, 8)), jnp.float32) for _ in range(2))
  mask = jnp.asarray(rng.random((2, 1, slots)) > 0.3).at[:, :, 0].set(True)
  _close(transformer.cached_attention(q, k, v, mask, decode="sum"),
         transformer.cached_attention(q, k, v, mask, decode="dot"))


def test_decode_score_blocks_divide_the_cache_in_rows_up_to_the_limit():
  limit = transformer.DECODE_SCORE_ROW
  assert transformer.decode_score_block(limit - 1) == limit - 1
  assert transformer.decode_score_block(663) == 221
  assert transformer.decode_score_block(1175) == 235
  assert transformer.decode_score_block(4 * limit) == limit
  assert transformer.decode_score_block(1031) == 1  # a prime: decode_cache_length avoids it
  for length in (100, limit, limit + 1, 1031, 1175, 4097):
    rounded = transformer.decode_cache_length(length)
    assert rounded - length in (0, 1)
    assert rounded == length or transformer.decode_score_block(rounded) > 1


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


def _distill_loss_and_grads(cfg, kind, tokens, valid, response_len=8):
  """A distillation loss through distill_objective, with its teacher's outputs from
  frozen_outputs of a second model: (loss, metrics, grads)."""
  student = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  teacher = transformer.Transformer(cfg, rngs=nnx.Rngs(1))
  graphdef, t_graphdef = nnx.split(student)[0], nnx.split(teacher)[0]
  params = steps.params_of(student)
  mask = jnp.asarray(np.random.default_rng(3).random((tokens.shape[0], response_len)) > 0.2)
  batch = {"tokens": tokens, "valid": valid, "mask": mask}
  what = {"fkl_topk": "top_k"}.get(kind, "logits")
  out = objectives.frozen_outputs(t_graphdef, steps.params_of(teacher), tokens, valid,
                                  response_len, what=what, top_k=5, temperature=0.7)
  if what == "top_k":
    batch["teacher_top_logprobs"], batch["teacher_top_ids"] = out["top_logprobs"], out["top_ids"]
  else:
    batch["teacher_logits"] = out["logits"]
  loss_fn = objectives.distill_objective(graphdef, kind, jsd_beta=0.3, temperature=0.7)
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, None)
  return loss, metrics, grads, out


@pytest.mark.parametrize("kind", ["fkl_full", "fkl_topk", "rkl_full", "jsd"])
@pytest.mark.parametrize("chunk", [3, 8])
def test_logits_chunk_leaves_every_distillation_loss_unchanged(kind, chunk):
  """Also the teacher's top-k, computed a chunk at a time."""
  tokens, valid = _rows()
  plain = _distill_loss_and_grads(CFG, kind, tokens, valid)
  other = _distill_loss_and_grads(dataclasses.replace(CFG, logits_chunk=chunk), kind, tokens,
                                  valid)
  _close(plain, other)


@pytest.mark.parametrize("kind", ["fkl_full", "fkl_topk", "rkl_full", "jsd"])
def test_logits_chunk_lowers_the_compiled_temporaries_of_every_distillation_loss(kind):
  """The student's [N, R, V] logits (and their gradient) never exist whole: the compiled
  gradient holds at least two [N, R, V] float32 buffers fewer than the plain path."""
  cfg = dataclasses.replace(CFG, vocab_size=2048)
  tokens, valid = _rows(4, 72, (0, 0, 0, 0))
  response_len = 64
  student = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  params = steps.params_of(student)
  rng = np.random.default_rng(0)
  batch = {"tokens": tokens, "valid": valid, "mask": jnp.ones((4, response_len), bool)}
  if kind == "fkl_topk":
    batch["teacher_top_logprobs"] = jnp.asarray(rng.normal(size=(4, response_len, 8)),
                                                jnp.float32)
    batch["teacher_top_ids"] = jnp.asarray(rng.integers(0, 2048, (4, response_len, 8)),
                                           jnp.int32)
  else:
    batch["teacher_logits"] = jnp.asarray(rng.normal(size=(4, response_len, 2048)),
                                          jnp.float32)

  def temp_bytes(chunk):
    graphdef = nnx.split(transformer.Transformer(dataclasses.replace(cfg, logits_chunk=chunk),
                                                 rngs=nnx.Rngs(0)))[0]
    loss_fn = objectives.distill_objective(graphdef, kind, jsd_beta=0.3)
    grad = jax.jit(jax.grad(lambda p, b: loss_fn(p, b, None)[0]))
    return grad.lower(params, batch).compile().memory_analysis().temp_size_in_bytes

  logits_bytes = 4 * response_len * 2048 * 4
  plain, chunked = temp_bytes(0), temp_bytes(8)
  assert plain - chunked > 2 * logits_bytes, (plain, chunked)


def test_logits_chunk_keeps_the_teachers_top_k_off_the_whole_logits():
  cfg = dataclasses.replace(CFG, vocab_size=2048)
  tokens, valid = _rows(4, 72, (0, 0, 0, 0))
  teacher = transformer.Transformer(cfg, rngs=nnx.Rngs(1))
  params = steps.params_of(teacher)

  def temp_bytes(chunk):
    graphdef = nnx.split(transformer.Transformer(dataclasses.replace(cfg, logits_chunk=chunk),
                                                 rngs=nnx.Rngs(0)))[0]
    fn = jax.jit(lambda p: objectives.frozen_outputs(graphdef, p, tokens, valid, 64,
                                                     what="top_k", top_k=8))
    return fn.lower(params).compile().memory_analysis().temp_size_in_bytes

  plain, chunked = temp_bytes(0), temp_bytes(8)
  assert plain - chunked > 4 * 64 * 2048 * 4, (plain, chunked)
