"""HERO reward shaping (Tao et al. 2025): stratified normalization + variance-aware weighting.

Within each prompt's group the verifier's 0/1 verdict fixes a band and the
reward model orders responses inside it (Eq. 3):

  r_rule = 0:  r_hat = -alpha + 2 alpha (s - min_0) / (max_0 - min_0 + eps)   in [-alpha, alpha]
  r_rule = 1:  r_hat = (1 - beta) + 2 beta (s - min_1) / (max_1 - min_1 + eps) in [1-beta, 1+beta]

min / max are over the group's responses with that verdict; a band with one
response, or tied scores, sits at its floor. `dense_range` switches the RM
spread per band: "both" (the paper), "neg" (only incorrect responses get the
dense spread; correct ones get 1), "pos", or "none" (plain 0/1). With
alpha + beta < 1 every verified-correct response scores above every
incorrect one.

Variance-aware weighting (Eqs. 4-5): sigma_u is the std of the RM scores of
a prompt's responses, sigma_bar a running mean of sigma_u (an EMA of the
batch mean, decay 0.9, as in the public reproduction; the paper gives no
rule), and

  w = w_min + (w_max - w_min) * sigmoid(k (sigma_u - sigma_bar)).

Placement. w is constant within a group, so GRPO's per-group std
normalization cancels it exactly when it multiplies the reward: (w r - w m) /
(w s) = (r - m) / s. We therefore apply it to the advantage after
normalization by default (`placement="advantage"`); `placement="reward"`
multiplies r_hat and only acts with std_mode "none" or "batch".

All functions are pure jnp on padded groups [P, G] with a validity mask.
"""
import dataclasses

import jax
import jax.numpy as jnp

from hybrid_rl.algorithms import policy_gradient

Array = jax.Array
DENSE_RANGES = ("none", "neg", "pos", "both")


def _masked_min_max(scores: Array, member: Array) -> tuple[Array, Array]:
  big = jnp.finfo(jnp.float32).max
  lo = jnp.min(jnp.where(member, scores, big), axis=-1, keepdims=True)
  hi = jnp.max(jnp.where(member, scores, -big), axis=-1, keepdims=True)
  return lo, hi


def stratified_normalize(rm_scores: Array, rule: Array, valid: Array, *, alpha: float,
                         beta: float, eps: float = 1e-6, dense_range: str = "both") -> Array:
  """Eq. 3. rm_scores, rule (0/1), valid: [P, G] -> r_hat [P, G] float32 (0 on padding)."""
  if dense_range not in DENSE_RANGES:
    raise ValueError(f"dense_range={dense_range!r}: choose {DENSE_RANGES}")
  s = rm_scores.astype(jnp.float32)
  positive = (rule > 0.5) & valid
  negative = (rule <= 0.5) & valid
  lo0, hi0 = _masked_min_max(s, negative)
  lo1, hi1 = _masked_min_max(s, positive)
  neg_dense = -alpha + 2 * alpha * (s - lo0) / (hi0 - lo0 + eps)
  pos_dense = (1 - beta) + 2 * beta * (s - lo1) / (hi1 - lo1 + eps)
  neg = neg_dense if dense_range in ("neg", "both") else jnp.zeros_like(s)
  pos = pos_dense if dense_range in ("pos", "both") else jnp.ones_like(s)
  return jnp.where(positive, pos, jnp.where(negative, neg, 0.0))


def group_std(scores: Array, valid: Array) -> Array:
  """Population std of each group's valid scores: [P, G] -> [P]."""
  w = valid.astype(jnp.float32)
  n = jnp.maximum(w.sum(-1), 1.0)
  mean = (scores * w).sum(-1) / n
  return jnp.sqrt((((scores - mean[:, None]) ** 2) * w).sum(-1) / n)


def variance_weight(sigma: Array, sigma_bar: Array, *, w_min: float, w_max: float,
                    k: float) -> Array:
  """Eqs. 4-5: per-prompt weight in [w_min, w_max] from sigma [P] and the running sigma_bar."""
  return w_min + (w_max - w_min) * jax.nn.sigmoid(k * (sigma - sigma_bar))


def update_sigma_bar(sigma_bar: Array, sigma: Array, has_group: Array,
                     decay: float = 0.9) -> Array:
  """EMA of the batch-mean sigma; a NaN sigma_bar (no history yet) starts at the batch mean."""
  w = has_group.astype(jnp.float32)
  batch_mean = (sigma * w).sum() / jnp.maximum(w.sum(), 1.0)
  return jnp.where(jnp.isnan(sigma_bar), batch_mean, decay * sigma_bar + (1 - decay) * batch_mean)


REWARD_MODES = ("verifier", "rm", "naive_sum", "hero")
PLACEMENTS = ("advantage", "reward")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """How rule verdicts and reward-model scores become rewards (config.reward)."""
  mode: str = "verifier"  # verifier | rm | naive_sum | hero
  naive_weight: float = 0.5  # naive_sum: rule + naive_weight * sigmoid(rm)
  alpha: float = 0.1
  beta: float = 0.1
  eps: float = 1e-6
  dense_range: str = "both"
  variance_weighting: bool = True
  w_min: float = 0.4  # appendix values (the paper's runs)
  w_max: float = 3.0
  k: float = 6.0
  placement: str = "advantage"
  sigma_decay: float = 0.9

  def __post_init__(self):
    if self.mode not in REWARD_MODES:
      raise ValueError(f"reward mode {self.mode!r}: choose {REWARD_MODES}")
    if self.placement not in PLACEMENTS:
      raise ValueError(f"placement {self.placement!r}: choose {PLACEMENTS}")
    if self.dense_range not in DENSE_RANGES:
      raise ValueError(f"dense_range={self.dense_range!r}: choose {DENSE_RANGES}")


def shaped_advantages(cfg: RewardConfig, rule: Array, rm_scores: Array | None, valid: Array,
                      sigma_bar: Array, *, std_mode: str = "group", estimator: str = "grpo"
                      ) -> tuple[Array, Array, Array, dict]:
  """Rewards and advantages for one batch of groups under `cfg.mode`.

  Args:
    rule: [P, G] 0/1 verifier verdicts; rm_scores: [P, G] reward-model scores
      (unused in verifier mode); valid: [P, G]; sigma_bar: running mean of the
      per-prompt RM std (NaN before the first update); estimator: the advantage of
      the final rewards (policy_gradient.advantages: grpo | rloo | reinforce_pp).
  Returns:
    (advantages [P, G], rewards [P, G], new sigma_bar, metrics).
  """
  rule = rule.astype(jnp.float32)
  metrics = {}
  weight = None
  if cfg.mode == "verifier":
    rewards = rule
  elif cfg.mode == "rm":
    rewards = jax.nn.sigmoid(rm_scores)
  elif cfg.mode == "naive_sum":
    rewards = rule + cfg.naive_weight * jax.nn.sigmoid(rm_scores)
  else:
    rewards = stratified_normalize(rm_scores, rule, valid, alpha=cfg.alpha, beta=cfg.beta,
                                   eps=cfg.eps, dense_range=cfg.dense_range)
    if cfg.variance_weighting:
      sigma = group_std(rm_scores, valid)
      has_group = valid.any(-1)
      reference = jnp.where(jnp.isnan(sigma_bar), (sigma * has_group).sum() /
                            jnp.maximum(has_group.sum(), 1), sigma_bar)
      weight = variance_weight(sigma, reference, w_min=cfg.w_min, w_max=cfg.w_max, k=cfg.k)
      sigma_bar = update_sigma_bar(sigma_bar, sigma, has_group, cfg.sigma_decay)
      metrics = {"hero_weight_mean": weight.mean(), "hero_sigma_bar": sigma_bar}
      if cfg.placement == "reward":
        rewards = rewards * weight[:, None]
  advantages = policy_gradient.advantages(rewards, valid, estimator=estimator,
                                          std_mode=std_mode)
  if weight is not None and cfg.placement == "advantage":
    advantages = advantages * weight[:, None]
  return advantages, rewards * valid, sigma_bar, metrics
