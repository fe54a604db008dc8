"""SFT, forward-KL distillation, on-policy distillation (OPD) and generalized JSD.

All per-token quantities are float32; `mask` [N, T] selects the tokens that
count (response tokens), losses are token means over it. Teacher outputs are
inputs (computed by a separate frozen forward pass), so gradients reach only
the student. Teacher and student share the tokenizer (same V).

  sft / sampled-token forward KL   -log pi_S(y_t)   on given (teacher) tokens
  full forward KL                  sum_v pT log(pT / pS)
  top-k forward KL                 same over the teacher's top-k tokens, pT
                                   renormalized over them, pS from the full softmax
  OPD, policy-gradient form        advantage_t = log pT(y_t) - log pS_old(y_t),
                                   loss_t = -rho_t A_t (rho to the sampler, optionally
                                   clipped to [1-eps, 1+eps]); discount 0
  full reverse KL                  sum_v pS log(pS / pT)
  generalized JSD(beta)            beta KL(pT || M) + (1-beta) KL(pS || M),
                                   M = beta pT + (1-beta) pS; beta=0 is forward KL,
                                   beta=1 reverse KL (as in GKD / TRL)
"""
import jax
import jax.numpy as jnp

Array = jax.Array


def token_mean(per_token: Array, mask: Array) -> Array:
  mask = mask.astype(jnp.float32)
  return (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def cross_entropy(logits: Array, targets: Array, mask: Array) -> Array:
  """SFT / sampled-token forward-KL loss. logits [N, T, V], targets [N, T] -> scalar."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return token_mean(nll, mask)


def forward_kl_tokens(student_logits: Array, teacher_logits: Array) -> Array:
  """Full-vocabulary KL(pT || pS) of each position: [N, T, V] each -> [N, T]."""
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
  return (jnp.exp(log_t) * (log_t - log_s)).sum(-1)


def forward_kl(student_logits: Array, teacher_logits: Array, mask: Array) -> Array:
  """Full-vocabulary KL(pT || pS) per token, token mean. [N, T, V] each."""
  return token_mean(forward_kl_tokens(student_logits, teacher_logits), mask)


def top_k_forward_kl_tokens(student_logits: Array, teacher_top_logprobs: Array,
                            teacher_top_ids: Array) -> Array:
  """KL over the teacher's top-k tokens (teacher renormalized over them), per position.

  Args:
    student_logits: [N, T, V].
    teacher_top_logprobs: [N, T, k] teacher log-probabilities of its top-k tokens.
    teacher_top_ids: [N, T, k] int32 token ids of those tokens.
  Returns:
    [N, T] float32.
  """
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  log_s_top = jnp.take_along_axis(log_s, teacher_top_ids, axis=-1)
  log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_top_logprobs).astype(jnp.float32), -1)
  return (jnp.exp(log_t) * (log_t - log_s_top)).sum(-1)


def top_k_forward_kl(student_logits: Array, teacher_top_logprobs: Array,
                     teacher_top_ids: Array, mask: Array) -> Array:
  """top_k_forward_kl_tokens, token mean over mask [N, T]."""
  return token_mean(top_k_forward_kl_tokens(student_logits, teacher_top_logprobs,
                                            teacher_top_ids), mask)


def teacher_top_k(teacher_logits: Array, k: int) -> tuple[Array, Array]:
  """(log-probabilities [.., k], ids [.., k]) of the teacher's top-k tokens."""
  logp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)
  values, ids = jax.lax.top_k(logp, k)
  return values, ids.astype(jnp.int32)


def opd_pg_loss(student_logprobs: Array, sampler_logprobs: Array, teacher_logprobs: Array,
                mask: Array, clip_epsilon: float = 0.0) -> tuple[Array, dict]:
  """On-policy distillation, policy-gradient form, on the sampled tokens.

  Args:
    student_logprobs: [N, T] log pS(y_t) under the learner (differentiated).
    sampler_logprobs: [N, T] log pS_old(y_t) from the rollout.
    teacher_logprobs: [N, T] log pT(y_t).
    mask: [N, T].
    clip_epsilon: > 0 clips rho to [1 - eps, 1 + eps] (PPO style); 0 disables.
  Returns:
    (loss, metrics); metrics["reverse_kl"] estimates KL(pS || pT) per token,
    metrics["ratio_mean"] is the mean of rho (1 on the first update when the
    learner computes what the sampler did).
  """
  advantage = jax.lax.stop_gradient(teacher_logprobs - sampler_logprobs)
  ratio = jnp.exp(student_logprobs - jax.lax.stop_gradient(sampler_logprobs))
  per_token = -ratio * advantage
  if clip_epsilon:
    clipped = -jnp.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * advantage
    per_token = jnp.maximum(per_token, clipped)
  loss = token_mean(per_token, mask)
  return loss, {"loss": loss, "reverse_kl": token_mean(-advantage, mask),
                "opd_reward": token_mean(advantage, mask), "ratio_mean": token_mean(ratio, mask)}


def reverse_kl_tokens(student_logits: Array, teacher_logits: Array) -> Array:
  """Full-vocabulary KL(pS || pT) of each position: [N, T, V] each -> [N, T]."""
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
  return (jnp.exp(log_s) * (log_s - log_t)).sum(-1)


def reverse_kl(student_logits: Array, teacher_logits: Array, mask: Array) -> Array:
  """Full-vocabulary KL(pS || pT) per token, token mean. [N, T, V] each."""
  return token_mean(reverse_kl_tokens(student_logits, teacher_logits), mask)


def generalized_jsd_tokens(student_logits: Array, teacher_logits: Array, beta: float) -> Array:
  """beta KL(pT||M) + (1-beta) KL(pS||M), M = beta pT + (1-beta) pS, of each position:
  [N, T, V] each -> [N, T]."""
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"jsd beta={beta}: must be in [0, 1]")
  if beta == 0.0:
    return forward_kl_tokens(student_logits, teacher_logits)
  if beta == 1.0:
    return reverse_kl_tokens(student_logits, teacher_logits)
  log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32), axis=-1)
  log_m = jnp.logaddexp(log_t + jnp.log(beta), log_s + jnp.log1p(-beta))
  kl_t = (jnp.exp(log_t) * (log_t - log_m)).sum(-1)
  kl_s = (jnp.exp(log_s) * (log_s - log_m)).sum(-1)
  return beta * kl_t + (1 - beta) * kl_s


def generalized_jsd(student_logits: Array, teacher_logits: Array, mask: Array,
                    beta: float) -> Array:
  """generalized_jsd_tokens, token mean over mask [N, T]."""
  return token_mean(generalized_jsd_tokens(student_logits, teacher_logits, beta), mask)


def entropy(logits: Array) -> Array:
  """Per-position entropy of softmax(logits): [..., V] -> [...] float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -(jnp.exp(logp) * logp).sum(-1)
