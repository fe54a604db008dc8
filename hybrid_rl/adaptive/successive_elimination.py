"""Reinforce-Ada (Xiong et al. 2025): adaptive sampling by successive elimination.

Phase 1 (rounds). Every prompt starts active with an empty pool. Each round
draws M new responses for every active prompt (one batched call for all of
them), appends them to the prompt's pool, and deactivates the prompts whose
exit condition holds:
  ada_pos      at least one correct response in the pool;
  ada_balance  at least n/2 correct and at least n/2 incorrect;
  fixed        (plain GRPO) one round of n responses, no elimination.
After N rounds the prompts still active fall back to passive filtering: the
group is drawn from what the pool has (an all-equal group gets zero advantage).
"Correct" means reward > threshold, so shaped rewards (HERO) plug in.

Phase 2 (groups). Each pool is down-sampled to n responses, aiming at n/2
correct and n/2 incorrect and filling from the other side when one is short,
choosing at random (seeded) within a side. Advantages use the statistics of
the whole pool ("global statistics"): A_i = r_i - mean(pool), divided by the
pool's std (ddof = 1) when rl.std_mode = "group" (by the batch std for
"batch"; Reinforce-Ada's default is "none"), not those of the kept n; the GRPO
stage applies them with policy_gradient.group_advantages.

Everything here is host-side Python on reward lists; the sampler and the
verifier are behind `sample_fn`.
"""
import dataclasses
from typing import Callable, Sequence

import numpy as np

MODES = ("fixed", "ada_pos", "ada_balance")


@dataclasses.dataclass(frozen=True)
class AdaConfig:
  mode: str = "ada_balance"
  n: int = 4  # group size kept for the update
  round_size: int = 8  # M, responses per active prompt per round
  max_rounds: int = 4  # N
  threshold: float = 0.7  # reward > threshold counts as correct
  global_stats: bool = True  # advantages from the pool's statistics, else the kept group's

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"sampling mode {self.mode!r}: choose {MODES}")
    if self.n < 1 or self.round_size < 1 or self.max_rounds < 1:
      raise ValueError("n, round_size and max_rounds must be >= 1")
    if self.mode != "fixed" and self.round_size < self.n:
      raise ValueError(f"round_size M={self.round_size} must be >= n={self.n} (Reinforce-Ada)")
    if self.mode == "ada_balance" and self.n % 2:
      raise ValueError(f"n={self.n} with ada_balance: n must be even (the exit condition and "
                       "the kept group both take n/2 correct and n/2 incorrect)")
    if not 0 <= self.threshold < 1:
      raise ValueError(f"threshold={self.threshold}: must be in [0, 1) (reward > threshold "
                       "counts as correct; verifier rewards are 0 or 1)")


def is_done(mode: str, num_correct: int, num_total: int, n: int) -> bool:
  """Exit condition of a pool with `num_correct` of `num_total` responses correct."""
  if mode == "fixed":
    return num_total >= n
  if mode == "ada_pos":
    return num_correct >= 1
  half = n // 2  # n is even for ada_balance (AdaConfig)
  return num_correct >= half and (num_total - num_correct) >= half


@dataclasses.dataclass
class Pool:
  """All responses drawn for one prompt: parallel lists of rewards and payloads."""
  rewards: list[float] = dataclasses.field(default_factory=list)
  items: list = dataclasses.field(default_factory=list)
  rounds: int = 0
  done: bool = False


# sample_fn(prompt indices, responses per prompt, round) -> for each prompt a
# list of (reward, payload) for its new responses.
SampleFn = Callable[[Sequence[int], int, int], list[list[tuple[float, object]]]]


def sample_rounds(sample_fn: SampleFn, num_prompts: int, cfg: AdaConfig) -> list[Pool]:
  """Phase 1: successive elimination over at most max_rounds rounds."""
  pools = [Pool() for _ in range(num_prompts)]
  per_round = cfg.n if cfg.mode == "fixed" else cfg.round_size
  rounds = 1 if cfg.mode == "fixed" else cfg.max_rounds
  for t in range(rounds):
    active = [i for i, p in enumerate(pools) if not p.done]
    if not active:
      break
    results = sample_fn(active, per_round, t)
    for i, new in zip(active, results):
      pool = pools[i]
      pool.rewards += [float(r) for r, _ in new]
      pool.items += [item for _, item in new]
      pool.rounds += 1
      correct = sum(r > cfg.threshold for r in pool.rewards)
      pool.done = is_done(cfg.mode, correct, len(pool.rewards), cfg.n)
  return pools


def choose_group(rewards: Sequence[float], cfg: AdaConfig, rng: np.random.Generator
                 ) -> list[int]:
  """Phase 2: indices of up to n pool members, balanced correct / incorrect."""
  if cfg.mode == "fixed":
    return list(range(min(cfg.n, len(rewards))))
  correct = [i for i, r in enumerate(rewards) if r > cfg.threshold]
  wrong = [i for i, r in enumerate(rewards) if r <= cfg.threshold]
  want_correct = cfg.n // 2
  take_correct = min(len(correct), want_correct)
  take_wrong = min(len(wrong), cfg.n - take_correct)
  take_correct = min(len(correct), cfg.n - take_wrong)  # fill from the other side
  chosen = list(rng.choice(correct, take_correct, replace=False)) if take_correct else []
  chosen += list(rng.choice(wrong, take_wrong, replace=False)) if take_wrong else []
  return sorted(int(i) for i in chosen)


def pool_statistics(pool_rewards: Sequence[float], chosen: Sequence[int], cfg: AdaConfig
                    ) -> tuple[float, float]:
  """(mean, std with ddof = 1) of the pool's rewards (global statistics) or of the
  kept group's: the baseline and scale of policy_gradient.group_advantages. A
  single reward has std 0."""
  pool = np.asarray(pool_rewards, np.float64)
  stats = pool if cfg.global_stats else pool[list(chosen)]
  std = stats.std(ddof=1) if stats.size > 1 else 0.0
  return float(stats.mean()), float(std)
