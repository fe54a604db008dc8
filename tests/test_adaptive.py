"""Reinforce-Ada rounds and groups on a simulated environment (Bernoulli pass rates, no model)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.adaptive import successive_elimination as se
from hybrid_rl.algorithms import policy_gradient as pg


def bernoulli_env(pass_rates, seed=0):
  rng = np.random.default_rng(seed)
  calls = []

  def sample_fn(indices, m, t):
    calls.append((list(indices), m, t))
    return [[(float(rng.random() < pass_rates[i]), (i, t, j)) for j in range(m)] for i in indices]
  return sample_fn, calls


def expected_rounds(p, cfg):
  """E[rounds] = sum_t P(not done after t rounds), t = 0..N-1."""
  total = 0.0
  for t in range(cfg.max_rounds):
    m = cfg.round_size * t
    if t == 0:
      total += 1
      continue
    if cfg.mode == "ada_pos":
      not_done = (1 - p) ** m
    else:
      half = cfg.n / 2
      done = sum(math.comb(m, c) * p**c * (1 - p) ** (m - c)
                 for c in range(m + 1) if c >= half and m - c >= half)
      not_done = 1 - done
    total += not_done
  return total


@pytest.mark.parametrize("mode", ["ada_pos", "ada_balance"])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_samples_consumed_match_expectation(mode, p):
  cfg = se.AdaConfig(mode=mode, n=4, round_size=8, max_rounds=4)
  prompts = 4000
  sample_fn, _ = bernoulli_env([p] * prompts, seed=1)
  pools = se.sample_rounds(sample_fn, prompts, cfg)
  mean_samples = np.mean([len(pl.rewards) for pl in pools])
  expected = cfg.round_size * expected_rounds(p, cfg)
  assert mean_samples == pytest.approx(expected, rel=0.03)


def test_rounds_are_batched_over_active_prompts_only():
  cfg = se.AdaConfig(mode="ada_pos", n=4, round_size=8, max_rounds=4)
  sample_fn, calls = bernoulli_env([1.0, 0.0, 0.0], seed=0)
  pools = se.sample_rounds(sample_fn, 3, cfg)
  assert [c[0] for c in calls] == [[0, 1, 2], [1, 2], [1, 2], [1, 2]]
  assert pools[0].done and pools[0].rounds == 1
  # a prompt with pass rate 0 stops after N rounds, still active
  assert not pools[1].done and pools[1].rounds == 4 and len(pools[1].rewards) == 32


def test_finished_ada_balance_groups_are_balanced_and_advantages_use_the_pool_mean():
  cfg = se.AdaConfig(mode="ada_balance", n=4, round_size=8, max_rounds=4)
  rates = np.random.default_rng(3).uniform(0.02, 0.98, 500)
  sample_fn, _ = bernoulli_env(rates, seed=2)
  pools = se.sample_rounds(sample_fn, len(rates), cfg)
  rng = np.random.default_rng(0)
  finished = 0
  for pool in pools:
    chosen = se.choose_group(pool.rewards, cfg, rng)
    kept = [pool.rewards[i] for i in chosen]
    assert len(chosen) == min(cfg.n, len(pool.rewards)) and len(set(chosen)) == len(chosen)
    if pool.done:
      finished += 1
      assert sum(r > cfg.threshold for r in kept) == 2 and sum(r <= cfg.threshold for r in kept) == 2
    baseline, scale = se.pool_statistics(pool.rewards, chosen, cfg)
    assert baseline == pytest.approx(np.mean(pool.rewards))
    assert scale == pytest.approx(np.std(pool.rewards, ddof=1))
  assert finished > 400


def test_group_fills_from_the_other_side_when_one_is_short():
  cfg = se.AdaConfig(mode="ada_balance", n=4)
  rng = np.random.default_rng(0)
  chosen = se.choose_group([1, 0, 0, 0, 0, 0, 0, 0], cfg, rng)
  assert sorted(r for r in np.array([1, 0, 0, 0, 0, 0, 0, 0])[chosen]) == [0, 0, 0, 1]
  assert se.choose_group([0, 0, 0], cfg, rng) == [0, 1, 2]
  all_wrong = [0.0] * 32
  chosen = se.choose_group(all_wrong, cfg, rng)
  baseline, scale = se.pool_statistics(all_wrong, chosen, cfg)
  adv = pg.group_advantages(jnp.zeros((1, 4)), jnp.ones((1, 4), bool), std_mode="group",
                            baseline=jnp.array([baseline]), scale=jnp.array([scale]))
  assert (np.asarray(adv) == 0).all()  # passive filtering: all-equal group, zero advantage


def test_choice_within_a_side_is_seeded():
  cfg = se.AdaConfig(mode="ada_balance", n=4)
  rewards = [1, 0] * 10
  a = se.choose_group(rewards, cfg, np.random.default_rng(5))
  b = se.choose_group(rewards, cfg, np.random.default_rng(5))
  assert a == b


def test_fixed_mode_is_one_round_of_n_and_group_statistics_option():
  cfg = se.AdaConfig(mode="fixed", n=4, global_stats=False)
  sample_fn, calls = bernoulli_env([0.5] * 3)
  pools = se.sample_rounds(sample_fn, 3, cfg)
  assert len(calls) == 1 and calls[0][1] == 4 and all(len(p.rewards) == 4 for p in pools)
  assert se.pool_statistics([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [0, 1, 2, 3], cfg) == pytest.approx(
      (0.5, np.std([1.0, 0.0, 0.0, 1.0], ddof=1)))


@pytest.mark.parametrize("std_mode", ["group", "batch", "none"])
def test_rl_std_mode_acts_on_pool_advantages(std_mode):
  """Ada advantages: r - pool mean, / pool std (group, ddof 1) or batch std; the same
  function, and the same ddof, as GRPO's group advantages."""
  cfg = se.AdaConfig(mode="ada_balance", n=4)
  pools = [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0]]
  chosen = [[0, 1, 2, 4], [0, 1, 2, 3]]
  kept = np.array([[pools[i][c] for c in chosen[i]] for i in range(2)])
  stats = [se.pool_statistics(p, c, cfg) for p, c in zip(pools, chosen)]
  adv = np.asarray(pg.group_advantages(
      jnp.asarray(kept), jnp.ones((2, 4), bool), std_mode=std_mode,
      baseline=jnp.array([m for m, _ in stats]), scale=jnp.array([s for _, s in stats])))
  expected = kept - np.array([[np.mean(p)] for p in pools])
  if std_mode == "group":
    expected /= np.array([[np.std(p, ddof=1)] for p in pools]) + 1e-6
  elif std_mode == "batch":
    expected /= kept.std(ddof=1) + 1e-6
  np.testing.assert_allclose(adv, expected, rtol=1e-5)


def test_odd_n_is_rejected_for_ada_balance_and_exit_matches_the_group():
  with pytest.raises(ValueError, match="n=3 with ada_balance: n must be even"):
    se.AdaConfig(mode="ada_balance", n=3)
  se.AdaConfig(mode="ada_pos", n=3)  # no balance condition: any n
  cfg = se.AdaConfig(mode="ada_balance", n=4)
  # Exactly n/2 correct and n/2 wrong: done, and the group takes all four, balanced.
  assert se.is_done("ada_balance", 2, 4, 4) and not se.is_done("ada_balance", 1, 4, 4)
  assert se.choose_group([1, 1, 0, 0], cfg, np.random.default_rng(0)) == [0, 1, 2, 3]


def test_bucket_sizes_are_powers_of_two_capped_at_the_batch():
  from hybrid_rl.sampling.continuous import pow2_bucket as bucket_size
  assert [bucket_size(n, 16) for n in (1, 2, 3, 5, 8, 9, 16)] == [1, 2, 4, 8, 8, 16, 16]
  assert bucket_size(13, 12) == 12
