"""The continuous-batching engine against the static sampler and the model's own
logprobs."""
import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.models import transformer
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import paged_attention
from hybrid_rl.sampling import rollouts
from hybrid_rl.sampling import sampler

CFG = transformer.ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                              num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
PROMPT_LENS = (3, 11, 7, 5, 9, 1)


@pytest.fixture(scope="module")
def model():
  return transformer.Transformer(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.default_rng(0)
  seqs = [list(rng.integers(3, CFG.vocab_size, size=n)) for n in PROMPT_LENS]
  return sampler.left_pad(seqs, 0, 12)


def engine(**kw):
  return continuous.EngineSettings(**{"engine": "continuous", "decode_steps": 3,
                                      "read_buckets": 3, **kw})


def stop_ids_at_varied_steps(model, prompts, n):
  """Stop tokens that end greedy rows at very different steps: the token each of a few
  rows emits at steps 2, 8, 14, ... of a run without stops."""
  sp = sampler.SamplingParams(max_new_tokens=n, temperature=0.0, num_samples=1)
  tokens = np.asarray(sampler.generate(model, *prompts, jax.random.PRNGKey(0), sp).tokens)
  return tuple(sorted({int(tokens[r, s]) for r, s in zip(range(0, 6, 2), (2, 8, 14))}))


def assert_same_output(a: sampler.SampleOutput, b: sampler.SampleOutput, atol=1e-5):
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  np.testing.assert_array_equal(np.asarray(a.lengths), np.asarray(b.lengths))
  np.testing.assert_array_equal(np.asarray(a.mask), np.asarray(b.mask))
  np.testing.assert_array_equal(np.asarray(a.finished), np.asarray(b.finished))
  np.testing.assert_allclose(np.asarray(a.logprobs), np.asarray(b.logprobs), atol=atol)


@pytest.mark.parametrize("slots,decode_steps,layout,active_buckets", [
    (3, 3, "slots", 8), (5, 1, "slots", 8), (18, 7, "slots", 8), (18, 2, "slots", 1),
    (3, 3, "pages", 8)])
def test_greedy_equals_static_sampler(model, prompts, slots, decode_steps, layout,
                                      active_buckets):
  """Mixed prompt lengths (1..11), rows stopping at very different steps, fewer slots
  than the 18 requests (each slot reused), reading 16 then 32 cache positions, the
  last live slots moved to the front and decoded alone (in multiples of 3 of 18 slots,
  or powers of two), as `simulate_schedule` plans it; the pages layout (TPU's, read
  here by the pure-JAX path) crosses pages of 4 tokens."""
  n = 20
  stops = stop_ids_at_varied_steps(model, prompts, n)
  sp = sampler.SamplingParams(max_new_tokens=n, temperature=0.0, num_samples=3,
                              stop_token_ids=stops, pad_token_id=0)
  static = sampler.generate(model, *prompts, jax.random.PRNGKey(1), sp)
  stats = continuous.EngineStats(timed=True)
  out = continuous.generate(model, *prompts, jax.random.PRNGKey(1), sp,
                            engine(slots=slots, decode_steps=decode_steps, kv_layout=layout,
                                   page_size=4, active_buckets=active_buckets), stats)
  lengths = np.asarray(static.lengths)
  assert lengths.min() <= 4 and lengths.max() == n and len(set(lengths)) >= 3, lengths
  assert_same_output(static, out)
  if slots < 18:
    assert stats.prefills > 1  # slots were refilled
  assert stats.emitted == lengths.sum()
  assert stats.decode_row_steps >= stats.emitted
  kinds = {"prefill", "decode"} | ({"move"} if stats.compactions else set())
  assert set(stats.seconds) == kinds and min(stats.seconds.values()) > 0, stats.seconds
  if layout == "slots":
    assert set(stats.read_lengths) == ({16, 32} if decode_steps < 7 else {32})
    if slots == 18:  # the last live slots moved to the front and decoded alone
      assert min(stats.active_slots) < 18 and stats.compactions >= 1, stats
    planned = continuous.simulate_schedule(lengths, 12, slots, decode_steps, 3, [32],
                                           active_buckets)
    assert set(stats.active_slots) == set(planned["active"].tolist())
  else:  # read lengths are multiples of the page size: 12, 24, 32 (= 12 + 20)
    assert set(stats.read_lengths) == {12, 24, 32}


def test_sampled_logprobs_match_the_model(model, prompts):
  """T=0.7 with top-k: the engine's logprobs are those of softmax(logits / T) of the
  emitted tokens, as transformer.token_logprobs computes them teacher-forced."""
  sp = sampler.SamplingParams(max_new_tokens=12, temperature=0.7, top_k=20, num_samples=2,
                              stop_token_ids=(5, 6, 7), pad_token_id=0)
  out = continuous.generate(model, *prompts, jax.random.PRNGKey(3), sp, engine(slots=5))
  tokens, valid = prompts
  rows = jnp.repeat(tokens, 2, axis=0), jnp.repeat(valid, 2, axis=0)
  full = jnp.concatenate([rows[0], jnp.asarray(out.tokens)], axis=1)
  full_valid = jnp.concatenate([rows[1], jnp.asarray(out.mask)], axis=1)
  expected = transformer.token_logprobs(model, full, full_valid, 0.7)[:, tokens.shape[1] - 1:]
  mask = np.asarray(out.mask)
  assert mask.sum() > 40
  np.testing.assert_allclose(np.asarray(expected)[mask], out.logprobs[mask], atol=1e-4)
  assert (out.logprobs[~mask] == 0).all()


def test_draws_do_not_depend_on_slots_or_reruns(model, prompts):
  """A request's draws are keyed by (request, token index): identical outputs on a
  re-run and for any slot count or decode_steps; another seed gives other ones."""
  sp = sampler.SamplingParams(max_new_tokens=10, temperature=1.0, num_samples=3,
                              stop_token_ids=(5, 6, 7, 8), pad_token_id=0)
  key = jax.random.PRNGKey(4)
  first = continuous.generate(model, *prompts, key, sp, engine(slots=4))
  assert_same_output(first, continuous.generate(model, *prompts, key, sp, engine(slots=4)), 0)
  assert_same_output(first, continuous.generate(model, *prompts, key, sp,
                                                engine(slots=18, decode_steps=5)))
  other = continuous.generate(model, *prompts, jax.random.PRNGKey(5), sp, engine(slots=4))
  assert not np.array_equal(first.tokens, other.tokens)
  assert len(set(first.lengths.tolist())) > 1  # some rows stopped early


def test_rollouts_sample_uses_the_configured_engine(model, prompts):
  """rollouts.generate dispatches on EngineSettings.engine; greedy outputs agree."""
  sp = sampler.SamplingParams(max_new_tokens=8, temperature=0.0, num_samples=2,
                              stop_token_ids=(5,), pad_token_id=0)
  key = jax.random.PRNGKey(0)
  static = rollouts.generate(model, *prompts, key, sp, chunks=2)
  cont = rollouts.generate(model, *prompts, key, sp, engine=engine(slots=4))
  assert isinstance(cont.tokens, jax.Array)
  assert_same_output(static, cont)


def test_gathered_paged_attention_equals_the_kernel_reference():
  """The pure-JAX paged path equals JAX's ref_ragged_paged_attention (one query per
  sequence) over shuffled pages and ragged lengths; slot_major_attention reads a
  slot-major pool through its own table and a bound on the pages it reads."""
  from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel
  rng = np.random.default_rng(0)
  s, n, k, d, page, width = 5, 6, 2, 16, 4, 6
  pool = jnp.asarray(rng.normal(size=(s * width, page, 2 * k, d)), jnp.float32)
  table = jnp.asarray(rng.permutation(s * width).reshape(s, width), jnp.int32)
  kv_lens = jnp.asarray([1, 4, 5, 17, 24], jnp.int32)
  q = jnp.asarray(rng.normal(size=(s, n, d)), jnp.float32)

  def reference(table):
    return np.asarray(kernel.ref_ragged_paged_attention(
        q, pool, kv_lens, table, jnp.arange(s + 1, dtype=jnp.int32), jnp.array([s], jnp.int32),
        sm_scale=1 / np.sqrt(d)))

  ours = paged_attention.gathered_decode_attention(q, pool, table, kv_lens)
  np.testing.assert_allclose(np.asarray(ours), reference(table), atol=1e-5)
  slot_major = paged_attention.slot_pages(s, width)
  for pages_read in (6, 7):  # 6 pages hold the longest (24 tokens)
    got = paged_attention.slot_major_attention(q, pool, kv_lens, min(pages_read, width))
    np.testing.assert_allclose(np.asarray(got), reference(slot_major), atol=1e-5)


def test_combine_kv_interleaves_heads_as_the_kernel_reads_them():
  k = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)
  both = paged_attention.combine_kv(k, -k)
  np.testing.assert_array_equal(both[:, 0::2], k)
  np.testing.assert_array_equal(both[:, 1::2], -k)


def test_read_lengths_cover_prompt_and_response_in_few_steps():
  """Even steps, the last no longer than the static sampler's cache rounded up."""
  assert continuous.read_lengths(663, 8) == [96 * i for i in range(1, 7)] + [672]
  assert continuous.read_lengths(20, 3) == [16, 32]
  assert continuous.read_lengths(5, 1) == [16]
  assert continuous.read_lengths(30, 2, multiple=4) == [16, 32]


def test_active_slot_counts_cover_the_live_slots_in_few_sizes():
  """Multiples of slots / buckets above one such step, powers of two below it; one
  bucket gives the powers of two alone."""
  assert [continuous.active_slot_count(n, 64, 8) for n in (1, 3, 8, 9, 33, 57, 64)] == [
      1, 4, 8, 16, 40, 64, 64]
  for slots in (18, 64, 100):
    assert [continuous.active_slot_count(n, slots, 1) for n in range(1, slots + 1)] == [
        continuous.pow2_bucket(n, slots) for n in range(1, slots + 1)]
    for buckets in (1, 3, 8):
      sizes = [continuous.active_slot_count(n, slots, buckets) for n in range(1, slots + 1)]
      assert all(n <= size <= slots for n, size in enumerate(sizes, 1))
      step = -(-slots // buckets)
      assert len(set(sizes)) <= buckets + step.bit_length()


def test_move_slots_copies_only_the_moved_rows_and_drops_padding():
  rng = np.random.default_rng(0)
  cache = [{"k": rng.normal(size=(6, 2, 5, 3)).astype(np.float32),
            "v": rng.normal(size=(6, 2, 5, 3)).astype(np.float32)}]
  logits = rng.normal(size=(6, 7)).astype(np.float32)
  src, dst = np.array([4, 5, 0]), np.array([1, 2, 6])  # the last pair pads (6 = S)
  moved, moved_logits = continuous.move_slots_jit(
      jax.tree.map(jnp.asarray, cache), jnp.asarray(logits), jnp.asarray(src),
      jnp.asarray(dst))
  order = np.array([0, 4, 5, 3, 4, 5])
  np.testing.assert_array_equal(moved[0]["k"], cache[0]["k"][order])
  np.testing.assert_array_equal(moved[0]["v"], cache[0]["v"][order])
  np.testing.assert_array_equal(moved_logits, logits[order])


def test_settings_from_config_reads_the_sampling_block():
  from configs import default
  sampling = default.get_config().sampling
  sampling.update(engine="continuous", slots=8)
  got = continuous.settings_from_config(sampling)
  assert dataclasses.asdict(got) == {**dataclasses.asdict(continuous.EngineSettings()),
                                     "engine": "continuous", "slots": 8}


def test_default_slots_hold_the_rows_of_one_static_chunk_rounded_to_a_power_of_two():
  settings = continuous.EngineSettings("continuous")
  assert rollouts.default_slots(settings, 18, 4).slots == 8
  assert rollouts.default_slots(settings, 16, 1).slots == 16
  assert rollouts.default_slots(settings, 18, 1).slots == 32
  assert rollouts.default_slots(engine(slots=3), 18, 4).slots == 3
  # Calls of 5..8 requests share one cache shape; set slots hold for any call.
  assert {continuous.slot_count(settings, n) for n in range(5, 9)} == {8}
  assert {continuous.slot_count(engine(slots=6), n) for n in (1, 6, 40)} == {6}


def test_rollout_model_prices_the_engine_schedule_by_hand():
  """bench.rollout_model on two requests of 2 and 5 tokens (prompt 3, limit 5), 2 slots,
  2 steps a call: the engine runs calls of 2, 2 and 1 steps on 2, then 1 (the live
  request moved to the front), then 1 slot, each reading the one 16-position bucket."""
  from experiments.bench import rollout_model
  lengths = np.array([2, 5])
  price = lambda **cost: rollout_model.price(lengths, 3, 5, 2, 2, 1, {"a": 0, "b": 0, "c": 0,
                                                                     **cost})
  assert price(a=1)["static"] == 5 and price(a=1)["continuous"] == 5
  per_slot = price(b=1)  # slot-steps
  assert (per_slot["static"], per_slot["continuous"], per_slot["ideal"]) == (10, 7, 7)
  reads = price(c=1)  # cache positions read
  assert reads["static"] == 5 * 2 * 8
  assert reads["continuous"] == 2 * 2 * 16 + 2 * 1 * 16 + 1 * 16
  assert reads["ideal"] == (4 + 4) + (5 + 5) + 6 + 7 + 8
