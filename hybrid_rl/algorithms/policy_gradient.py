"""GRPO-family policy-gradient loss and advantages, on per-token logprobs.

Shapes: P prompts, G responses per prompt (groups may be padded: `group_valid`),
N = number of response rows in a batch, R response tokens per row.

Advantages (per response), by estimator:
  grpo:  A_i = (r_i - b) / s
         b = group mean over the valid responses of the prompt, or an externally
             supplied per-prompt baseline (Reinforce-Ada's pool mean over all samples
             drawn for the prompt, not only the kept ones);
         s = group std ("group"), std over the whole batch ("batch"), or 1 ("none",
             Dr.GRPO / Reinforce-Ada default), plus eps.
  rloo:  A_i = r_i - mean_{j != i} r_j = n / (n - 1) (r_i - mean_j r_j), n the group's
         valid responses (RLOO, Ahmadian et al. 2024; 0 for a group of one).
  reinforce_pp:  A_i = (c_i - mean_batch c) / std_batch c, c_i = r_i - group mean
         (REINFORCE++-baseline, Hu et al. 2025: the group baseline, then one
         normalization over every valid response of the batch).

Loss per token (verl / DAPO conventions):
  rho = exp(logp - logp_old)                          importance_level "token"
  rho = exp(sg[l_i] + logp - sg[logp]),               importance_level "sequence" (GSPO,
        l_i = sum_t (logp - logp_old) / |y_i|         Zheng et al. 2025; its clip range
                                                      sequence_epsilon_low / _high)
        the value of rho is the length-normalized sequence ratio s_i at every token of
        row i and its gradient s_i grad logp_t: with one advantage per sequence and
        seq_mean_token_mean this is GSPO's objective, with per-token advantages GSPO-token.
  l_clip = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))
  dual clip (A < 0): l = min(l_clip, -A c)
  l *= min(exp(logp_old - logp_sampler), tis_cap)   # truncated IS, when given (sequence
                                                    # level: the row's mean log ratio)
  l += kl_coef * KL_k(pi || pi_ref) - entropy_coef * H
Aggregation over the response mask:
  token_mean            sum(l) / sum(mask)                    (DAPO, Reinforce-Ada)
  seq_mean_token_mean   mean_i [ sum_t l_it / len_i ]         (GRPO)
  seq_mean_token_sum_norm  sum(l) / (N * L)                   (Dr.GRPO; L = a fixed length,
                                                              the sampler's max_new_tokens)
Under gradient accumulation each micro-batch's loss is weighted by its share
of the aggregation's denominator (`aggregation_weight`: tokens, sequences with
tokens, or rows), so k micro-batches give the gradient of the whole batch.

Standard deviations (std_mode "group" and "batch") use ddof = 1, as torch.std
in TRL and verl.

KL terms, used as loss terms on samples y ~ pi (ratio = pi_ref / pi):
  k1 = log pi - log pi_ref: gradient grad log pi, zero in expectation
       (E_pi[grad log pi] = 0); it acts only through sampling noise and
       off-policy ratios.
  k3 = ratio - 1 - log ratio: an unbiased, non-negative estimate of
       KL(pi || pi_ref), but its gradient (1 - ratio) grad log pi has
       expectation -E_{pi_ref}[grad log pi] = grad KL(pi_ref || pi): as a loss
       it regularizes the reverse direction, KL(pi_ref || pi).
"""
import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

STD_MODES = ("group", "batch", "none")
ESTIMATORS = ("grpo", "rloo", "reinforce_pp")
IMPORTANCE_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
# Metrics that are means over response tokens.
TOKEN_METRICS = ("clip_fraction", "ratio_mean", "approx_kl_old", "kl_ref", "entropy")


@dataclasses.dataclass(frozen=True)
class PGConfig:
  epsilon_low: float = 0.2
  epsilon_high: float = 0.2  # 0.28 = clip-higher
  dual_clip: float = 0.0  # c > 1 enables dual clip (Reinforce-Ada: 10); 0 disables
  kl_coef: float = 0.0
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0
  aggregation: str = "token_mean"
  tis_cap: float = 0.0  # > 0: truncated importance weight cap; 0 disables
  # Dr.GRPO's constant divisor L; 0 = the batch's response width. The GRPO stage
  # sets it to sampling.max_new_tokens so trimming padding changes nothing.
  norm_length: int = 0
  importance_level: str = "token"  # "sequence": GSPO's length-normalized sequence ratio
  sequence_epsilon_low: float = 3e-4  # GSPO's clip range (its paper's values)
  sequence_epsilon_high: float = 4e-4

  def __post_init__(self):
    if self.importance_level not in IMPORTANCE_LEVELS:
      raise ValueError(f"importance_level={self.importance_level!r}: choose "
                       f"{IMPORTANCE_LEVELS}")
    if self.kl_estimator not in KL_ESTIMATORS:
      raise ValueError(f"kl_estimator={self.kl_estimator!r}: choose {KL_ESTIMATORS}")
    if self.aggregation not in AGGREGATIONS:
      raise ValueError(f"aggregation={self.aggregation!r}: choose {AGGREGATIONS}")
    if self.dual_clip and self.dual_clip <= 1:
      raise ValueError(f"dual_clip={self.dual_clip}: must be > 1 (or 0 to disable)")


def group_advantages(rewards: Array, group_valid: Array, *, std_mode: str = "group",
                     baseline: Array | None = None, scale: Array | None = None,
                     eps: float = 1e-6) -> Array:
  """Per-response advantages for padded groups.

  Args:
    rewards: [P, G] float32.
    group_valid: [P, G] bool, False on group padding.
    std_mode: "group" | "batch" | "none".
    baseline: optional [P] per-prompt baseline replacing the group mean.
    scale: optional [P] per-prompt std replacing the group std (std_mode "group").
  Returns:
    [P, G] float32, 0 on padding.
  """
  if std_mode not in STD_MODES:
    raise ValueError(f"std_mode={std_mode!r}: choose {STD_MODES}")
  rewards = rewards.astype(jnp.float32)
  w = group_valid.astype(jnp.float32)
  count = jnp.maximum(w.sum(-1, keepdims=True), 1.0)
  mean = (rewards * w).sum(-1, keepdims=True) / count
  if baseline is not None:
    mean = baseline.astype(jnp.float32)[:, None]
  centered = rewards - mean
  if std_mode == "group":
    if scale is None:
      group_mean = (rewards * w).sum(-1, keepdims=True) / count
      var = (((rewards - group_mean) ** 2) * w).sum(-1, keepdims=True) / jnp.maximum(count - 1, 1)
      scale = jnp.sqrt(var)
    else:
      scale = scale.astype(jnp.float32)[:, None]
    centered = centered / (scale + eps)
  elif std_mode == "batch":
    total = jnp.maximum(w.sum(), 1.0)
    batch_mean = (rewards * w).sum() / total
    batch_std = jnp.sqrt((((rewards - batch_mean) ** 2) * w).sum() / jnp.maximum(total - 1, 1))
    centered = centered / (batch_std + eps)
  return centered * w


def rloo_advantages(rewards: Array, group_valid: Array) -> Array:
  """[P, G] RLOO advantages: each valid response's reward minus the mean of the other
  valid responses of its group (0 on padding and in groups of one)."""
  rewards = rewards.astype(jnp.float32)
  w = group_valid.astype(jnp.float32)
  count = w.sum(-1, keepdims=True)
  others = ((rewards * w).sum(-1, keepdims=True) - rewards) / jnp.maximum(count - 1, 1.0)
  return jnp.where(count > 1, rewards - others, 0.0) * w


def reinforce_pp_advantages(rewards: Array, group_valid: Array, eps: float = 1e-6) -> Array:
  """[P, G] REINFORCE++-baseline advantages: group-mean-centred rewards normalized by
  their mean and std (ddof 1) over every valid response of the batch."""
  w = group_valid.astype(jnp.float32)
  centered = group_advantages(rewards, group_valid, std_mode="none")
  total = jnp.maximum(w.sum(), 1.0)
  mean = (centered * w).sum() / total
  std = jnp.sqrt((((centered - mean) ** 2) * w).sum() / jnp.maximum(total - 1, 1.0))
  return (centered - mean) / (std + eps) * w


def advantages(rewards: Array, group_valid: Array, *, estimator: str = "grpo",
               std_mode: str = "group", baseline: Array | None = None,
               scale: Array | None = None) -> Array:
  """[P, G] advantages of config.rl.advantage (module docstring): grpo takes std_mode and
  an optional external baseline / scale (Reinforce-Ada's pool); rloo and reinforce_pp
  have their own baseline and scaling (config_checks refuses the combinations)."""
  if estimator == "grpo":
    return group_advantages(rewards, group_valid, std_mode=std_mode, baseline=baseline,
                            scale=scale)
  if baseline is not None or scale is not None or std_mode != "none":
    raise ValueError(f"advantage estimator {estimator!r} takes no external baseline or "
                     f"scale and std_mode 'none' (got {std_mode!r})")
  if estimator == "rloo":
    return rloo_advantages(rewards, group_valid)
  if estimator == "reinforce_pp":
    return reinforce_pp_advantages(rewards, group_valid)
  raise ValueError(f"advantage estimator {estimator!r}: choose {ESTIMATORS}")


def kl_penalty(logprobs: Array, ref_logprobs: Array, estimator: str) -> Array:
  """Per-token estimate of KL(pi || pi_ref) from the sampled token (Schulman's k1/k2/k3)."""
  log_ratio = ref_logprobs - logprobs  # log pi_ref / pi
  if estimator == "k1":
    return -log_ratio
  if estimator == "k2":
    return 0.5 * log_ratio**2
  if estimator == "k3":
    return jnp.exp(log_ratio) - log_ratio - 1.0
  raise ValueError(f"unknown KL estimator {estimator!r}")


def aggregate(per_token: Array, mask: Array, aggregation: str, norm_length: int = 0) -> Array:
  """Reduce [N, R] per-token losses to a scalar over `mask` [N, R].

  norm_length: seq_mean_token_sum_norm's fixed L (0: R, the given width).
  """
  mask = mask.astype(jnp.float32)
  if aggregation == "token_mean":
    return (per_token * mask).sum() / jnp.maximum(mask.sum(), 1.0)
  if aggregation == "seq_mean_token_mean":
    per_seq = (per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    has_tokens = (mask.sum(-1) > 0).astype(jnp.float32)
    return (per_seq * has_tokens).sum() / jnp.maximum(has_tokens.sum(), 1.0)
  if aggregation == "seq_mean_token_sum_norm":
    return (per_token * mask).sum() / (mask.shape[0] * (norm_length or mask.shape[1]))
  raise ValueError(f"unknown aggregation {aggregation!r}")


def aggregation_weight(mask: Array, aggregation: str) -> Array:
  """The denominator `aggregate` divides by, up to a constant: response tokens
  (token_mean), sequences with tokens (seq_mean_token_mean) or rows
  (seq_mean_token_sum_norm). Gradient accumulation weights micro-batches by it."""
  mask = mask.astype(jnp.float32)
  if aggregation == "token_mean":
    return mask.sum()
  if aggregation == "seq_mean_token_mean":
    return (mask.sum(-1) > 0).astype(jnp.float32).sum()
  if aggregation == "seq_mean_token_sum_norm":
    return jnp.asarray(mask.shape[0], jnp.float32)
  raise ValueError(f"unknown aggregation {aggregation!r}")


def pg_loss(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array,
            cfg: PGConfig, *, ref_logprobs: Array | None = None,
            sampler_logprobs: Array | None = None, entropy: Array | None = None
            ) -> tuple[Array, Mapping[str, Array]]:
  """Clipped-surrogate policy-gradient loss.

  Args:
    logprobs: [N, R] float32 log pi(y_t | s_t) under the learner (differentiated).
    old_logprobs: [N, R] log pi_old, the policy that produced the rollouts.
    advantages: [N] per-sequence or [N, R] per-token advantages.
    mask: [N, R] bool response tokens that count (truncated rows may be masked out).
    cfg: loss options.
    ref_logprobs: [N, R] frozen reference logprobs, for the KL term.
    sampler_logprobs: [N, R] the sampler's logprobs, for truncated IS against
      old_logprobs (when the sampler differs numerically from the learner).
    entropy: [N, R] per-token policy entropy, for the bonus.
  Returns:
    (scalar loss, metrics); metrics["loss_weight"] is the micro-batch weight
    for gradient accumulation (see `aggregation_weight`), metrics["metric_weights"] the
    token count each token-mean metric is accumulated by.
  """
  adv = advantages if advantages.ndim == 2 else advantages[:, None]
  adv = jax.lax.stop_gradient(adv.astype(jnp.float32))
  old_logprobs = jax.lax.stop_gradient(old_logprobs)
  log_ratio = logprobs - old_logprobs
  maskf = mask.astype(jnp.float32)
  if cfg.importance_level == "sequence":
    seq_log_ratio = (log_ratio * maskf).sum(-1, keepdims=True) / jnp.maximum(
        maskf.sum(-1, keepdims=True), 1.0)
    ratio = jnp.exp(jax.lax.stop_gradient(seq_log_ratio) + logprobs
                    - jax.lax.stop_gradient(logprobs))
    low, high = cfg.sequence_epsilon_low, cfg.sequence_epsilon_high
  else:
    ratio = jnp.exp(log_ratio)
    low, high = cfg.epsilon_low, cfg.epsilon_high
  clipped_ratio = jnp.clip(ratio, 1.0 - low, 1.0 + high)
  loss_unclipped = -adv * ratio
  loss_clipped = -adv * clipped_ratio
  per_token = jnp.maximum(loss_unclipped, loss_clipped)
  if cfg.dual_clip:
    per_token = jnp.where(adv < 0, jnp.minimum(per_token, -adv * cfg.dual_clip), per_token)
  if sampler_logprobs is not None and cfg.tis_cap:
    log_weight = old_logprobs - jax.lax.stop_gradient(sampler_logprobs)
    if cfg.importance_level == "sequence":  # one length-normalized weight per row, as s_i
      log_weight = (log_weight * maskf).sum(-1, keepdims=True) / jnp.maximum(
          maskf.sum(-1, keepdims=True), 1.0)
    per_token = per_token * jnp.minimum(jnp.exp(log_weight), cfg.tis_cap)
  n_tokens = jnp.maximum(maskf.sum(), 1.0)
  metrics = {
      "pg_loss": aggregate(per_token, mask, cfg.aggregation, cfg.norm_length),
      "clip_fraction": ((loss_clipped > loss_unclipped) * maskf).sum() / n_tokens,
      "ratio_mean": (ratio * maskf).sum() / n_tokens,
      "approx_kl_old": (0.5 * log_ratio**2 * maskf).sum() / n_tokens,
  }
  if ref_logprobs is not None and cfg.kl_coef:
    kl = kl_penalty(logprobs, jax.lax.stop_gradient(ref_logprobs), cfg.kl_estimator)
    per_token = per_token + cfg.kl_coef * kl
    metrics["kl_ref"] = (kl * maskf).sum() / n_tokens
  if entropy is not None and cfg.entropy_coef:
    per_token = per_token - cfg.entropy_coef * entropy
    metrics["entropy"] = (entropy * maskf).sum() / n_tokens
  loss = aggregate(per_token, mask, cfg.aggregation, cfg.norm_length)
  metrics["loss"] = loss
  metrics["loss_weight"] = aggregation_weight(mask, cfg.aggregation)
  # Token means are accumulated over micro-batches by their own token counts, whatever
  # the loss's weight (sequences under seq_mean_token_mean).
  metrics["metric_weights"] = {k: maskf.sum() for k in TOKEN_METRICS if k in metrics}
  return loss, metrics
