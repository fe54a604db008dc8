"""Sampler: logprobs equal a teacher-forced pass; greedy, stop tokens, top-k/top-p sets."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.models import transformer
from hybrid_rl.sampling import sampler

CFG = transformer.ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_layers=2,
                              num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True)
PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]


@pytest.fixture(scope="module")
def model():
  return transformer.Transformer(CFG, rngs=nnx.Rngs(0))


def _teacher_forced(model, prompts, valid, out, g, temperature):
  p = prompts.shape[1]
  tokens = jnp.concatenate([jnp.repeat(prompts, g, 0), out.tokens], axis=1)
  mask = jnp.concatenate([jnp.repeat(valid, g, 0), out.mask], axis=1)
  return np.asarray(transformer.token_logprobs(model, tokens, mask, temperature)[:, p - 1:])


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 10, 0.9), (0.0, 0, 1.0)])
def test_sampler_logprobs_equal_teacher_forced_pass(model, temperature, top_k, top_p):
  prompts, valid = sampler.left_pad(PROMPTS, pad_id=0)
  sp = sampler.SamplingParams(max_new_tokens=16, temperature=temperature, top_k=top_k,
                              top_p=top_p, num_samples=4, stop_token_ids=(3,))
  out = sampler.generate(model, prompts, valid, jax.random.PRNGKey(1), sp)
  assert out.tokens.shape == (12, 16)
  ref = _teacher_forced(model, prompts, valid, out, 4, temperature or 1.0)
  mask = np.asarray(out.mask)
  np.testing.assert_allclose(np.where(mask, ref, 0), np.asarray(out.logprobs), atol=1e-4)
  assert (np.asarray(out.logprobs)[~mask] == 0).all()
  np.testing.assert_array_equal(mask.sum(1), np.asarray(out.lengths))


def test_greedy_equals_argmax_of_forward_and_stops(model):
  prompts, valid = sampler.left_pad(PROMPTS, pad_id=0)
  out = sampler.generate(model, prompts, valid, jax.random.PRNGKey(0),
                         sampler.SamplingParams(max_new_tokens=8, temperature=0.0))
  # The reference: argmax of a full forward pass, one token at a time. Sequences sit in a
  # right-padded buffer of one width (causal attention: positions past the last real
  # token change nothing before it), so the forward compiles once.
  width = max(map(len, PROMPTS)) + 8
  forward = jax.jit(lambda tokens, valid: transformer.forward_logits(model, tokens, valid))
  for i, prompt in enumerate(PROMPTS):
    seq = list(prompt)
    for _ in range(8):
      n = len(seq)
      logits = forward(jnp.asarray([seq + [0] * (width - n)]), jnp.arange(width)[None] < n)
      seq.append(int(jnp.argmax(logits[0, n - 1])))
    assert np.asarray(out.tokens[i]).tolist() == seq[len(prompt):]
  # With the first greedy token as a stop token every row of prompt 0 ends after one token.
  stop = int(out.tokens[0, 0])
  out2 = sampler.generate(model, prompts, valid, jax.random.PRNGKey(0),
                          sampler.SamplingParams(max_new_tokens=8, temperature=0.0,
                                                 stop_token_ids=(stop,), pad_token_id=0))
  assert int(out2.lengths[0]) == 1 and bool(out2.finished[0])
  assert (np.asarray(out2.tokens[0, 1:]) == 0).all()


def test_samples_per_prompt_are_distinct_and_reproducible(model):
  prompts, valid = sampler.left_pad(PROMPTS, pad_id=0)
  sp = sampler.SamplingParams(max_new_tokens=10, temperature=1.0, num_samples=3)
  a = sampler.generate(model, prompts, valid, jax.random.PRNGKey(7), sp)
  b = sampler.generate(model, prompts, valid, jax.random.PRNGKey(7), sp)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert len({tuple(np.asarray(a.tokens[i])) for i in range(3)}) > 1


def _allowed_sets(logits, top_k, top_p):
  """NumPy reference: the tokens top-k then top-p sampling may emit, per row."""
  allowed = []
  for row in logits:
    order = np.argsort(-row)
    keep = order[:top_k] if top_k else order
    probs = np.exp(row[keep] - row[keep].max())
    probs /= probs.sum()
    mass_before = np.cumsum(probs) - probs
    allowed.append(set(keep[mass_before < top_p].tolist()))
  return allowed


@pytest.mark.parametrize("top_k,top_p", [(5, 1.0), (0, 0.6), (8, 0.8)])
def test_top_k_top_p_never_emit_outside_allowed_set(top_k, top_p):
  logits = jax.random.normal(jax.random.PRNGKey(3), (4, 50)) * 2.0
  sp = sampler.SamplingParams(max_new_tokens=1, temperature=1.0, top_k=top_k, top_p=top_p)
  keys = jax.random.split(jax.random.PRNGKey(4), 2000)
  tokens, _ = jax.vmap(lambda k: sampler.sample_token(k, logits, sp))(keys)
  tokens = np.asarray(tokens)  # [2000, 4]
  for row, allowed in enumerate(_allowed_sets(np.asarray(logits), top_k, top_p)):
    emitted = set(tokens[:, row].tolist())
    assert emitted <= allowed
    assert len(emitted) >= min(len(allowed), 2)  # still random inside the set


@pytest.mark.parametrize("vocab,block", [(50, 8), (7, 256), (300, 256)])
def test_categorical_draws_follow_softmax(vocab, block):
  """Chi-square goodness of fit of 20,000 draws per row, on vocabularies that do and do
  not fill whole blocks; tokens at finfo.min are never drawn."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(vocab)
  logits = rng.randn(3, vocab).astype(np.float32) * 1.5
  logits[:, vocab // 2] = np.finfo(np.float32).min
  keys = jax.random.split(jax.random.PRNGKey(5), 20_000)
  draws = np.asarray(jax.vmap(lambda k: sampler.categorical(k, jnp.asarray(logits), block))(keys))
  for row in range(3):
    row_logits = logits[row].astype(np.float64)
    probs = np.exp(row_logits - row_logits.max())
    probs /= probs.sum()
    counts = np.bincount(draws[:, row], minlength=vocab)
    assert counts.size == vocab and counts[vocab // 2] == 0
    keep = probs * draws.shape[0] >= 5  # the chi-square approximation's usual condition
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(probs[keep], probs[~keep].sum()) * draws.shape[0]
    if expected[-1] < 1e-9:
      observed, expected = observed[:-1], expected[:-1]
    expected *= observed.sum() / expected.sum()
    assert stats.chisquare(observed, expected).pvalue > 1e-3, (row, observed, expected)


def test_left_pad_buckets_and_truncates():
  tokens, valid = sampler.left_pad([[1, 2], [3, 4, 5, 6]], pad_id=0, length=3)
  assert np.asarray(tokens).tolist() == [[0, 1, 2], [4, 5, 6]]
  assert np.asarray(valid).tolist() == [[False, True, True], [True, True, True]]


def test_chunked_generation_is_per_chunk_generation_concatenated(model):
  from hybrid_rl.sampling import rollouts  # pylint: disable=g-import-not-at-top
  prompts = jnp.asarray(np.random.default_rng(3).integers(1, 50, (4, 5)), jnp.int32)
  valid = jnp.ones((4, 5), bool).at[0, :2].set(False)
  sp = sampler.SamplingParams(max_new_tokens=6, temperature=1.0, num_samples=2)
  key = jax.random.PRNGKey(7)
  chunked = rollouts.generate_chunked(model, prompts, valid, key, sp, chunks=2)
  for i in range(2):
    part = sampler.generate(model, prompts[2 * i:2 * i + 2], valid[2 * i:2 * i + 2],
                            jax.random.fold_in(key, i), sp)
    for got, want in zip(chunked, part):
      np.testing.assert_array_equal(np.asarray(got)[4 * i:4 * i + 4], np.asarray(want))
  # Chunks that do not divide the prompts make uneven slices (1, 2 and 1 prompts).
  uneven = rollouts.generate_chunked(model, prompts, valid, key, sp, chunks=3)
  first = sampler.generate(model, prompts[:1], valid[:1], jax.random.fold_in(key, 0), sp)
  np.testing.assert_array_equal(np.asarray(uneven.tokens)[:2], np.asarray(first.tokens))
  assert uneven.tokens.shape == chunked.tokens.shape


@pytest.mark.parametrize("t", [1, 3])
def test_cached_attention_equals_attention_on_the_same_keys(t):
  """The decode path (cache [B, K, S, D], multiply-and-sum at T=1) against the
  training path's attention ([B, S, K, D] keys, einsum) with the same mask."""
  b, n, k, s, d = 2, 6, 2, 7, 4
  rng = np.random.RandomState(0)
  q = jnp.asarray(rng.randn(b, t, n, d), jnp.float32)
  keys = jnp.asarray(rng.randn(b, s, k, d), jnp.float32)
  values = jnp.asarray(rng.randn(b, s, k, d), jnp.float32)
  mask = jnp.asarray(rng.rand(b, t, s) < 0.7).at[:, :, 0].set(True)
  want = transformer.attention(q, keys, values, mask)
  got = transformer.cached_attention(q, keys.transpose(0, 2, 1, 3), values.transpose(0, 2, 1, 3),
                                     mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
