"""Model-level objectives: `loss_fn(params, batch, rng) -> (loss, metrics)` for each stage.

They connect the model to the pure losses in `hybrid_rl.algorithms`. Batches
hold left-padded prompt + response rows:

  tokens [N, L] int32, valid [N, L] bool      prompt (P, left-padded) then response (R)
  mask   [N, R] bool                          response tokens that count

Position t of the response is predicted by the hidden state at L - R - 1 + t,
so only the last R hidden states go through the LM head.

Frozen models (reference, teacher) are run by `frozen_outputs` beforehand;
their outputs enter as batch fields.
"""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_rl.algorithms import distillation
from hybrid_rl.algorithms import policy_gradient
from hybrid_rl.algorithms import reward_model
from hybrid_rl.models import transformer
from hybrid_rl.train import batches
from hybrid_rl.train import steps

Array = jax.Array
DISTILL_LOSSES = ("fkl_sampled", "fkl_full", "fkl_topk", "opd_pg", "rkl_full", "jsd")
REWARD_LOSSES = ("bradley_terry", "pointwise")


def _model(graphdef: nnx.GraphDef, params, compute_dtype: str) -> transformer.Transformer:
  return nnx.merge(graphdef, steps.cast_params(params, compute_dtype))


def _hidden(model, tokens: Array, valid: Array) -> Array:
  hidden, _ = model(tokens, transformer.positions_from_valid(valid), valid)
  return hidden


def sequence_scores(model, tokens: Array, valid: Array) -> Array:
  """Scalar-head score of each row's last valid token: [N, L] -> [N] float32."""
  return model.scores(_hidden(model, tokens, valid), valid)[:, 0]


score_jit = jax.jit(
    lambda graphdef, params, tokens, valid: sequence_scores(
        nnx.merge(graphdef, params), tokens, valid), static_argnums=0)


def score_rows(graphdef, params, tokens, valid, batch: int = 256) -> np.ndarray:
  """Reward-model scores [N] float32 of token rows, in chunks of `batch` rows (one
  compilation; config.reward.rm_batch_rows in the GRPO stage)."""
  out = []
  for start in range(0, len(tokens), batch):
    t, v = np.asarray(tokens[start:start + batch]), np.asarray(valid[start:start + batch])
    pad = batch - len(t)
    if pad:  # the last row repeated: one compiled shape
      t, v = (np.concatenate([x, np.repeat(x[-1:], pad, 0)]) for x in (t, v))
    scores = score_jit(graphdef, params, jnp.asarray(t), jnp.asarray(v))
    out.append(np.asarray(scores)[: batch - pad])
  return np.concatenate(out)


def response_logits(model, tokens: Array, valid: Array, response_len: int,
                    temperature: float = 1.0) -> Array:
  """Logits predicting the last `response_len` tokens: [N, R, V] float32."""
  hidden = _hidden(model, tokens[:, :-1], valid[:, :-1])[:, -response_len:]
  logits = model.logits(hidden)
  return logits / temperature if temperature not in (0.0, 1.0) else logits


def response_logprobs(model, tokens: Array, valid: Array, response_len: int,
                      temperature: float = 1.0, with_entropy: bool = False
                      ) -> tuple[Array, Array | None]:
  """Logprobs of the last `response_len` tokens [N, R] (and their entropy [N, R]) under
  the sampling distribution. With model.cfg.logits_chunk > 0 the [N, R, V] logits never
  exist whole (transformer.chunked_head); the values are the same."""
  targets = tokens[:, -response_len:]
  chunk = model.cfg.logits_chunk
  if not chunk or chunk >= response_len:
    logits = response_logits(model, tokens, valid, response_len, temperature)
    ent = distillation.entropy(logits) if with_entropy else None
    return transformer.gather_logprobs(logits, targets), ent
  hidden = _hidden(model, tokens[:, :-1], valid[:, :-1])[:, -response_len:]
  return transformer.chunked_head(hidden, model.head_weight(), targets, chunk, temperature,
                                  with_entropy)


def response_map(model, tokens: Array, valid: Array, response_len: int, fn, inputs: tuple,
                 temperature: float = 1.0):
  """fn(logits [N, R, V] of the last `response_len` positions, *inputs [N, R, ...]) -> a
  pytree of [N, R, ...] arrays; with model.cfg.logits_chunk > 0 applied to that many
  positions at a time, so the [N, R, V] logits never exist whole (same values)."""
  chunk = model.cfg.logits_chunk
  if not chunk or chunk >= response_len:
    return fn(response_logits(model, tokens, valid, response_len, temperature), *inputs)
  hidden = _hidden(model, tokens[:, :-1], valid[:, :-1])[:, -response_len:]
  return transformer.map_position_chunks(fn, hidden, model.head_weight(), inputs, chunk,
                                         temperature)


def grpo_objective(graphdef: nnx.GraphDef, cfg: policy_gradient.PGConfig, *,
                   temperature: float = 1.0, compute_dtype: str = "float32"):
  """Loss of a batches.PGBatch. Without old_logprobs the policy being updated is
  the one that sampled (one update per batch): its own logprobs, held constant,
  are pi_old, which saves the separate forward pass that computed them."""
  def loss_fn(params, batch: batches.PGBatch, rng):
    del rng
    r = batch.mask.shape[1]
    model = _model(graphdef, params, compute_dtype)
    logprobs, ent = response_logprobs(model, batch.tokens, batch.valid, r, temperature,
                                      with_entropy=bool(cfg.entropy_coef))
    old = logprobs if batch.old_logprobs is None else batch.old_logprobs
    return policy_gradient.pg_loss(
        logprobs, old, batch.advantages, batch.mask, cfg, ref_logprobs=batch.ref_logprobs,
        sampler_logprobs=batch.sampler_logprobs, entropy=ent)
  return loss_fn


def sft_objective(graphdef: nnx.GraphDef, *, compute_dtype: str = "float32"):
  """Cross-entropy on response tokens. Batch: tokens, valid, mask [N, R]."""
  def loss_fn(params, batch, rng):
    del rng
    r = batch["mask"].shape[1]
    model = _model(graphdef, params, compute_dtype)
    logprobs, _ = response_logprobs(model, batch["tokens"], batch["valid"], r)
    loss = distillation.token_mean(-logprobs, batch["mask"])
    return loss, {"loss": loss, "loss_weight": _token_count(batch["mask"])}
  return loss_fn


def _token_count(mask: Array) -> Array:
  """Gradient-accumulation weight of a token-mean loss (see steps.make_train_step)."""
  return mask.astype(jnp.float32).sum()


def distill_objective(graphdef: nnx.GraphDef, kind: str, *, jsd_beta: float = 0.5,
                      opd_clip_epsilon: float = 0.0, temperature: float = 1.0,
                      compute_dtype: str = "float32"):
  """Student-side distillation losses (see hybrid_rl.algorithms.distillation).

  Batch fields by kind: fkl_sampled: (teacher rollouts) tokens, valid, mask;
  fkl_full / rkl_full / jsd: + teacher_logits [N, R, V]; fkl_topk:
  + teacher_top_logprobs, teacher_top_ids [N, R, k]; opd_pg (student
  rollouts): + teacher_logprobs, sampler_logprobs [N, R].
  With model.logits_chunk > 0 every loss computes the student's logits that many
  positions at a time (response_map).
  temperature: the student's logits are divided by the sampling temperature,
  as the sampler's and (frozen_outputs) the teacher's are, so every
  distribution compared is the one that samples.
  """
  if kind not in DISTILL_LOSSES:
    raise ValueError(f"distillation loss {kind!r}: choose {DISTILL_LOSSES}")

  def loss_fn(params, batch, rng):
    del rng
    r = batch["mask"].shape[1]
    model = _model(graphdef, params, compute_dtype)
    mask = batch["mask"]
    weight = {"loss_weight": _token_count(mask)}
    if kind in ("fkl_sampled", "opd_pg"):  # the sampled tokens' logprobs are enough
      logprobs, _ = response_logprobs(model, batch["tokens"], batch["valid"], r, temperature)
      if kind == "fkl_sampled":
        loss = distillation.token_mean(-logprobs, mask)
        return loss, {"loss": loss, **weight}
      loss, metrics = distillation.opd_pg_loss(logprobs, batch["sampler_logprobs"],
                                               batch["teacher_logprobs"], mask, opd_clip_epsilon)
      return loss, {**metrics, **weight}
    if kind == "fkl_full":
      per_token, inputs = distillation.forward_kl_tokens, (batch["teacher_logits"],)
    elif kind == "fkl_topk":
      per_token = distillation.top_k_forward_kl_tokens
      inputs = (batch["teacher_top_logprobs"], batch["teacher_top_ids"])
    elif kind == "rkl_full":
      per_token, inputs = distillation.reverse_kl_tokens, (batch["teacher_logits"],)
    else:
      per_token = lambda s, t: distillation.generalized_jsd_tokens(s, t, jsd_beta)
      inputs = (batch["teacher_logits"],)
    loss = distillation.token_mean(
        response_map(model, batch["tokens"], batch["valid"], r, per_token, inputs, temperature),
        mask)
    return loss, {"loss": loss, **weight}
  return loss_fn


def reward_objective(graphdef: nnx.GraphDef, kind: str, *, compute_dtype: str = "float32"):
  """Scalar-head losses. pointwise: tokens, valid, labels [N]; bradley_terry:
  chosen_tokens, chosen_valid, rejected_tokens, rejected_valid."""
  if kind not in REWARD_LOSSES:
    raise ValueError(f"reward-model loss {kind!r}: choose {REWARD_LOSSES}")

  def loss_fn(params, batch, rng):
    del rng
    model = _model(graphdef, params, compute_dtype)
    if kind == "pointwise":
      return reward_model.pointwise_loss(sequence_scores(model, batch["tokens"], batch["valid"]),
                                         batch["labels"])
    return reward_model.bradley_terry_loss(
        sequence_scores(model, batch["chosen_tokens"], batch["chosen_valid"]),
        sequence_scores(model, batch["rejected_tokens"], batch["rejected_valid"]))
  return loss_fn


def frozen_outputs(graphdef: nnx.GraphDef, params, tokens: Array, valid: Array,
                   response_len: int, *, what: str, top_k: int = 0,
                   temperature: float = 1.0, compute_dtype: str = "float32",
                   micro_batches: int = 1) -> dict:
  """Outputs of a frozen model (reference or teacher) on the response positions.

  what: "logprobs" -> {"logprobs": [N, R]} of the given tokens;
        "logits"   -> {"logits": [N, R, V]};
        "top_k"    -> {"top_logprobs", "top_ids": [N, R, k]}.
  micro_batches: forward passes over that many equal slices of the N rows, one after
  another (a whole rollout batch at once holds every row's activations).
  Jit it with static `response_len`, `what`, `top_k`, `micro_batches`.
  """
  if micro_batches > 1:
    n = tokens.shape[0]
    split = lambda x: x.reshape(micro_batches, n // micro_batches, *x.shape[1:])
    one = lambda tv: frozen_outputs(graphdef, params, tv[0], tv[1], response_len, what=what,
                                    top_k=top_k, temperature=temperature,
                                    compute_dtype=compute_dtype)
    out = jax.lax.map(one, (split(tokens), split(valid)))
    return jax.tree.map(lambda x: x.reshape(n, *x.shape[2:]), out)
  model = _model(graphdef, params, compute_dtype)
  if what == "logprobs":
    return {"logprobs": response_logprobs(model, tokens, valid, response_len, temperature)[0]}
  if what == "logits":  # the output itself is [N, R, V]: nothing to gain by chunks
    return {"logits": response_logits(model, tokens, valid, response_len, temperature)}
  if what == "top_k":
    values, ids = response_map(model, tokens, valid, response_len,
                               lambda logits: distillation.teacher_top_k(logits, top_k), (),
                               temperature)
    return {"top_logprobs": values, "top_ids": ids}
  raise ValueError(f"frozen output {what!r}: choose logprobs, logits or top_k")


frozen_outputs_jit = jax.jit(frozen_outputs, static_argnums=(0, 4),
                             static_argnames=("what", "top_k", "temperature", "compute_dtype",
                                              "micro_batches"))


def frozen_micro_batches(rows: int, grad_accum_steps: int, micro_batch_rows: int) -> int:
  """Row slices for frozen_outputs on `rows` rows: as many as the train step's
  micro-batches (grad_accum_steps of them, each at most micro_batch_rows), or one
  slice each micro_batch_rows where grad_accum_steps does not divide the rows."""
  return steps.num_micro_batches(rows, grad_accum_steps if rows % grad_accum_steps == 0 else 1,
                                 micro_batch_rows)
