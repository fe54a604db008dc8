"""Jitted train steps: finite differences, non-finite guard, accumulation, bf16, PPO epochs."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybrid_rl.algorithms import policy_gradient as pg
from hybrid_rl.train import batches
from hybrid_rl.train import objectives
from hybrid_rl.train import steps
from tests.train_fixtures import grpo_batch, tiny_model


def _setup(objective="grpo", lr=1e-2):
  model = tiny_model()
  graphdef, _ = nnx.split(model)
  if objective == "grpo":
    loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(epsilon_high=0.28))
  else:
    loss_fn = objectives.sft_objective(graphdef)
  optimizer = optax.adamw(lr)
  state = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  return model, graphdef, loss_fn, optimizer, state


def test_model_gradients_match_finite_differences():
  model, _, loss_fn, _, state = _setup("sft")
  batch = grpo_batch(model)._asdict()
  params = state["params"]
  grads = jax.grad(lambda p: loss_fn(p, batch, None)[0])(params)
  for seed in range(3):
    keys = jax.random.split(jax.random.PRNGKey(seed), len(jax.tree.leaves(params)))
    direction = jax.tree.unflatten(jax.tree.structure(params), [
        jax.random.normal(k, x.shape) for k, x in zip(keys, jax.tree.leaves(params))])
    norm = optax.tree.norm(direction)
    direction = jax.tree.map(lambda d: d / norm, direction)  # unit step in parameter space
    eps = 1e-2
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
    fd = (loss_fn(shifted(1.0), batch, None)[0] - loss_fn(shifted(-1.0), batch, None)[0]) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    np.testing.assert_allclose(float(fd), float(analytic), rtol=2e-2, atol=1e-4)


def test_first_epoch_ratio_is_one_through_the_model():
  model, _, loss_fn, _, state = _setup()
  _, metrics = loss_fn(state["params"], grpo_batch(model), None)
  assert abs(float(metrics["ratio_mean"]) - 1.0) < 1e-6
  assert float(metrics["clip_fraction"]) == 0.0


def test_on_policy_loss_without_old_logprobs_equals_the_frozen_pass():
  # One update per batch: the loss's own logprobs, held constant, stand in for the
  # separate pi_old pass (grpo_stage.update skips it); loss, metrics and gradients agree.
  model, _, loss_fn, _, state = _setup()
  batch = grpo_batch(model)
  on_policy = batch._replace(old_logprobs=None)
  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, None)
  (loss2, metrics2), grads2 = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"], on_policy, None)
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-5, atol=1e-7)
  assert float(metrics2["ratio_mean"]) == 1.0 and float(metrics2["clip_fraction"]) == 0.0
  for g, g2 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads2)):
    np.testing.assert_allclose(np.asarray(g2), np.asarray(g), rtol=1e-4, atol=1e-7)
  # A pi_old that differs is not replaced: the two losses then disagree.
  stale = batch._replace(old_logprobs=batch.old_logprobs - 0.5 * batch.mask)
  assert abs(float(loss_fn(state["params"], stale, None)[0]) - float(loss)) > 1e-3


def test_nonfinite_batch_leaves_state_bit_identical():
  model, _, loss_fn, optimizer, state = _setup()
  step = jax.jit(steps.make_train_step(loss_fn, optimizer))
  batch = grpo_batch(model)
  batch = batch._replace(advantages=batch.advantages.at[0].set(jnp.nan))
  before = jax.device_get(state)
  after, metrics = step(state, batch, jax.random.PRNGKey(1))
  assert float(metrics["nonfinite_skipped"]) == 1.0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(after))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  good = grpo_batch(model)
  after, metrics = step(after, good, jax.random.PRNGKey(1))
  assert float(metrics["nonfinite_skipped"]) == 0.0 and int(after["step"]) == 1


def test_an_update_that_makes_parameters_non_finite_is_skipped():
  """Finite loss and gradients, but an infinite step size: the update is not applied."""
  model, _, loss_fn, _, state = _setup()
  optimizer = optax.sgd(float("inf"))
  state = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  before = jax.device_get(state["params"])
  after, metrics = jax.jit(steps.make_train_step(loss_fn, optimizer))(
      state, grpo_batch(model), jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["nonfinite_skipped"]) == 1.0 and int(after["step"]) == 0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(after["params"]))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("objective", ["token_mean", "seq_mean_token_mean",
                                       "seq_mean_token_sum_norm", "sft"])
def test_gradient_accumulation_equals_one_big_batch(objective):
  """Micro-batches with different token counts (and an empty row) still give the
  whole batch's loss and update, for every aggregation."""
  model = tiny_model()
  graphdef, _ = nnx.split(model)
  if objective == "sft":
    loss_fn = objectives.sft_objective(graphdef)
  else:
    loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(aggregation=objective,
                                                              norm_length=7))
  optimizer = optax.sgd(1.0)  # the update is the gradient itself
  state = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  batch = grpo_batch(model)
  batch = batch._replace(mask=batch.mask.at[1].set(False))
  if objective == "sft":
    batch = batch._asdict()
  counts = np.asarray(batch["mask"] if objective == "sft" else batch.mask).sum(1)
  assert counts[:4].sum() != counts[4:].sum()  # micro-batches of unequal token counts
  one, m1 = jax.jit(steps.make_train_step(loss_fn, optimizer))(state, batch, jax.random.PRNGKey(0))
  for split in ({"grad_accum_steps": 2}, {"grad_accum_steps": 4}, {"micro_batch_rows": 3},
                {"grad_accum_steps": 2, "micro_batch_rows": 1}):
    many, m = jax.jit(steps.make_train_step(loss_fn, optimizer, **split))(
        state, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(m["loss"]), float(m1["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
    # atol: summation order (8 one-row passes); a wrongly weighted pass is off by ~1e-2.
    for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(many["params"])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert "loss_weight" not in m1  # an accumulation detail, not a logged metric


@pytest.mark.parametrize("aggregation", ["seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_token_metrics_under_accumulation_equal_one_pass(aggregation):
  """Token means (clip fraction, ratio, KL to pi_old and the reference) of micro-batches
  of unequal token counts are weighted by tokens, not by the loss's sequence weight."""
  model = tiny_model()
  graphdef, _ = nnx.split(model)
  loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(aggregation=aggregation,
                                                            norm_length=7, kl_coef=0.1))
  optimizer = optax.sgd(1.0)
  state = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  batch = grpo_batch(model)
  noise = jax.random.normal(jax.random.PRNGKey(3), batch.old_logprobs.shape)
  batch = batch._replace(old_logprobs=batch.old_logprobs + 0.5 * noise * batch.mask,
                         ref_logprobs=batch.old_logprobs - 0.3 * noise * batch.mask)
  counts = np.asarray(batch.mask).sum(1)
  assert len(set(counts[i:i + 2].sum() for i in range(0, 8, 2))) > 1  # unequal micro-batches
  _, one = jax.jit(steps.make_train_step(loss_fn, optimizer))(state, batch, jax.random.PRNGKey(0))
  assert 0.05 < float(one["clip_fraction"]) < 0.95
  for split in ({"grad_accum_steps": 4}, {"micro_batch_rows": 3}):
    _, many = jax.jit(steps.make_train_step(loss_fn, optimizer, **split))(
        state, batch, jax.random.PRNGKey(0))
    for key in ("clip_fraction", "ratio_mean", "approx_kl_old", "kl_ref"):
      np.testing.assert_allclose(float(many[key]), float(one[key]), rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("objective", ["token_mean", "seq_mean_token_sum_norm", "sft"])
def test_length_sorted_micro_batches_equal_one_big_batch(objective, monkeypatch):
  """Rows sorted by length into micro-batches, each trimmed to its own width, give
  the whole batch's loss, metrics and update (pi_old from the loss's own forward)."""
  model = tiny_model()
  graphdef, _ = nnx.split(model)
  if objective == "sft":
    loss_fn = objectives.sft_objective(graphdef)
  else:
    loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(aggregation=objective,
                                                              norm_length=7))
  optimizer = optax.sgd(1.0)  # the update is the gradient itself
  batch = grpo_batch(model, n=10, p=12, r=16, seed=1)._replace(old_logprobs=None)
  if objective == "sft":
    batch = {k: batch._asdict()[k] for k in ("tokens", "valid", "mask")}
  state = lambda: steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  one, m1 = jax.jit(steps.make_train_step(loss_fn, optimizer))(state(), batch,
                                                               jax.random.PRNGKey(0))
  widths = []
  trim = batches.trim_padding
  def recording_trim(b, multiple):
    out = trim(b, multiple)
    if isinstance(out, dict):  # a PGBatch is trimmed through its dict
      widths.append(out["mask"].shape[1])
    return out
  monkeypatch.setattr(batches, "trim_padding", recording_trim)
  step = steps.make_length_sorted_step(loss_fn, optimizer, micro_batch_rows=3, multiple=4)
  many, m = step(state(), batch, jax.random.PRNGKey(0))
  assert len(widths) == 4 and widths == sorted(widths) and widths[0] < 16, widths
  np.testing.assert_allclose(float(m["loss"]), float(m1["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
  for key in set(m1) - {"loss", "grad_norm"}:
    np.testing.assert_allclose(float(m[key]), float(m1[key]), rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(one["params"]), jax.tree.leaves(many["params"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert int(many["step"]) == 1


def test_micro_batches_are_the_fewest_that_divide_the_rows_under_the_cap():
  assert steps.num_micro_batches(256) == 1
  assert steps.num_micro_batches(256, micro_batch_rows=8) == 32
  assert steps.num_micro_batches(32, micro_batch_rows=32) == 1
  assert steps.num_micro_batches(24, micro_batch_rows=7) == 4  # 6 rows: the largest divisor <= 7
  assert steps.num_micro_batches(13, micro_batch_rows=4) == 13  # a prime: one row each
  assert steps.num_micro_batches(48, grad_accum_steps=4, micro_batch_rows=5) == 12
  assert steps.num_micro_batches(48, grad_accum_steps=4) == 4
  with pytest.raises(ValueError, match="not divisible by grad_accum_steps=5"):
    steps.num_micro_batches(48, grad_accum_steps=5, micro_batch_rows=8)


def test_bf16_compute_keeps_float32_master_weights():
  model = tiny_model()
  graphdef, _ = nnx.split(model)
  loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(), compute_dtype="bfloat16")
  optimizer = optax.adamw(1e-3)
  state = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  new, metrics = jax.jit(steps.make_train_step(loss_fn, optimizer))(
      state, grpo_batch(model), jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics["loss"]))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new["params"]))
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(new["params"]), jax.tree.leaves(state["params"])))


def test_ppo_epochs_move_the_ratio_after_the_first_update():
  model, _, loss_fn, optimizer, state = _setup(lr=3e-2)
  step = jax.jit(steps.make_train_step(loss_fn, optimizer))
  state, history = steps.ppo_epochs(step, state, grpo_batch(model), jax.random.PRNGKey(0),
                                    epochs=2, minibatches=2)
  assert len(history) == 4 and [h["epoch"] for h in history] == [0, 0, 1, 1]
  assert abs(float(history[0]["ratio_mean"]) - 1.0) < 1e-6
  assert abs(float(history[-1]["ratio_mean"]) - 1.0) > 1e-4
  assert int(state["step"]) == 4


def _padded_batch(model, n=8, p=12, r=14, prompt_max=5, response_max=6, seed=3):
  """A GRPO batch whose rows use at most prompt_max / response_max of the P / R slots
  (row 0 uses exactly that many)."""
  rs = np.random.RandomState(seed)
  tokens = np.zeros((n, p + r), np.int32)
  valid = np.zeros((n, p + r), bool)
  mask = np.zeros((n, r), bool)
  for i in range(n):
    lp, lr = rs.randint(2, prompt_max + 1), rs.randint(1, response_max + 1)
    if i == 0:
      lp, lr = prompt_max, response_max
    valid[i, p - lp:p + lr] = True
    mask[i, :lr] = True
    tokens[i, p - lp:p + lr] = rs.randint(1, model.cfg.vocab_size, lp + lr)
  graphdef, _ = nnx.split(model)
  old = objectives.frozen_outputs_jit(graphdef, steps.params_of(model), jnp.asarray(tokens),
                                      jnp.asarray(valid), r, what="logprobs")["logprobs"]
  return {"tokens": jnp.asarray(tokens), "valid": jnp.asarray(valid), "mask": jnp.asarray(mask),
          "old_logprobs": old, "sampler_logprobs": old,
          "advantages": jnp.asarray(rs.randn(n), jnp.float32)}


@pytest.mark.parametrize("objective", ["token_mean", "seq_mean_token_mean",
                                       "seq_mean_token_sum_norm", "sft"])
def test_trimming_padding_columns_leaves_losses_and_gradients_unchanged(objective):
  model = tiny_model()
  graphdef, _ = nnx.split(model)
  params = steps.params_of(model)
  if objective == "sft":
    loss_fn = objectives.sft_objective(graphdef)
  else:  # Dr.GRPO divides by the fixed length (the stage's max_new_tokens), not the width
    loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(aggregation=objective,
                                                              norm_length=14))
  full = _padded_batch(model)
  trimmed = batches.trim_padding(full, multiple=4)
  as_input = lambda batch: batch if objective == "sft" else batches.PGBatch(**batch)
  same = jax.tree.map(np.array_equal, batches.trim_padding(as_input(full), 4), as_input(trimmed))
  assert jax.tree.all(same)
  assert trimmed["tokens"].shape == (8, 8 + 8) and trimmed["mask"].shape == (8, 8)
  assert trimmed["sampler_logprobs"].shape == (8, 8) and trimmed["advantages"].shape == (8,)
  # A frozen model's log-probs on the trimmed batch are the full batch's first columns.
  old = objectives.frozen_outputs_jit(graphdef, params, trimmed["tokens"],
                                      trimmed["valid"], 8, what="logprobs")["logprobs"]
  np.testing.assert_allclose(np.asarray(old), np.asarray(full["old_logprobs"][:, :8]),
                             atol=1e-5)
  (loss_full, _), g_full = jax.value_and_grad(loss_fn, has_aux=True)(params, as_input(full), None)
  (loss_trim, _), g_trim = jax.value_and_grad(loss_fn, has_aux=True)(params, as_input(trimmed),
                                                                     None)
  np.testing.assert_allclose(float(loss_trim), float(loss_full), rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g_trim), jax.tree.leaves(g_full)):  # float32 summation order
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_grpo_stage_sets_dr_grpo_divisor_to_max_new_tokens():
  from configs import default  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import grpo_stage  # pylint: disable=g-import-not-at-top
  config = default.get_config("micro")
  assert grpo_stage.pg_config(config).norm_length == config.sampling.max_new_tokens


def test_trimming_keeps_used_columns_and_can_be_switched_off():
  model = tiny_model()
  full = _padded_batch(model)
  assert batches.trim_padding(full, 0) is full
  widest = _padded_batch(model, prompt_max=12, response_max=14)  # row 0 uses every slot
  assert batches.trim_padding(widest, 4)["tokens"].shape == widest["tokens"].shape
  # Widths are rounded up to the multiple, never past the full P = 12 and R = 14.
  odd = batches.trim_padding(_padded_batch(model, prompt_max=9, response_max=13), 5)
  assert odd["tokens"].shape[1] - odd["mask"].shape[1] == 10 and odd["mask"].shape[1] == 14
  assert batches.trim_padding(_padded_batch(model, prompt_max=3, response_max=2), 5
                               )["tokens"].shape[1] == 5 + 5


def test_a_policy_gradient_step_raises_the_likelihood_of_positive_advantage_responses():
  """The direction RL learns in: after one small step, responses with A > 0 gain
  log-probability relative to those with A < 0 (a sign error fails this)."""
  model, graphdef, loss_fn, optimizer, state = _setup(lr=1e-3)
  batch = grpo_batch(model, n=16)
  state, _ = jax.jit(steps.make_train_step(loss_fn, optimizer))(state, batch,
                                                               jax.random.PRNGKey(0))
  new = objectives.frozen_outputs_jit(graphdef, state["params"], batch.tokens, batch.valid,
                                      batch.mask.shape[1], what="logprobs")["logprobs"]
  gain = ((new - batch.old_logprobs) * batch.mask).sum(-1)  # [N] per response
  adv = np.asarray(batch.advantages)
  assert float(np.mean(np.asarray(gain)[adv > 0])) > float(np.mean(np.asarray(gain)[adv < 0]))
  assert float(np.dot(adv, np.asarray(gain))) > 0
