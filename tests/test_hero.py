"""HERO Eq. 3 and Eqs. 4-5 against a NumPy reference, edge cases and invariants."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.algorithms import policy_gradient as pg
from hybrid_rl.rewards import hero


def np_stratified(scores, rule, valid, alpha, beta, eps, dense_range):
  out = np.zeros_like(scores, dtype=np.float64)
  for p in range(scores.shape[0]):
    for label in (0, 1):
      idx = np.where(valid[p] & (rule[p] == label))[0]
      if idx.size == 0:
        continue
      s = scores[p, idx]
      lo, hi = s.min(), s.max()
      if label == 0:
        dense = dense_range in ("neg", "both")
        out[p, idx] = -alpha + 2 * alpha * (s - lo) / (hi - lo + eps) if dense else 0.0
      else:
        dense = dense_range in ("pos", "both")
        out[p, idx] = (1 - beta) + 2 * beta * (s - lo) / (hi - lo + eps) if dense else 1.0
  return out


def _groups(seed=0):
  rs = np.random.RandomState(seed)
  scores = rs.randn(6, 5).astype(np.float32)
  rule = (rs.rand(6, 5) > 0.5).astype(np.float32)
  valid = np.ones((6, 5), bool)
  rule[0] = 1  # all correct
  rule[1] = 0  # all wrong
  valid[2, 1:] = False  # singleton
  scores[3] = 0.7  # tied scores
  valid[4, 3:] = False  # padded group
  return scores, rule, valid


@pytest.mark.parametrize("dense_range", hero.DENSE_RANGES)
@pytest.mark.parametrize("alpha,beta", [(0.05, 0.05), (0.1, 0.2), (1.0, 1.0)])
def test_stratified_normalization_matches_numpy(dense_range, alpha, beta):
  scores, rule, valid = _groups()
  ours = hero.stratified_normalize(jnp.asarray(scores), jnp.asarray(rule), jnp.asarray(valid),
                                   alpha=alpha, beta=beta, eps=1e-6, dense_range=dense_range)
  ref = np_stratified(scores, rule, valid, alpha, beta, 1e-6, dense_range)
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-6)
  assert (np.asarray(ours)[~valid] == 0).all()


def test_edge_groups_land_where_the_paper_says():
  scores, rule, valid = _groups()
  r = np.asarray(hero.stratified_normalize(jnp.asarray(scores), jnp.asarray(rule),
                                           jnp.asarray(valid), alpha=0.1, beta=0.1))
  assert r[0].min() == pytest.approx(0.9) and r[0].max() == pytest.approx(1.1, abs=1e-5)
  assert r[1].min() == pytest.approx(-0.1) and r[1].max() == pytest.approx(0.1, abs=1e-5)
  floor = 0.9 if rule[2, 0] else -0.1
  assert r[2, 0] == pytest.approx(floor)  # singleton at its band floor
  tied = r[3]
  assert np.allclose(tied[rule[3] == 1], 0.9) and np.allclose(tied[rule[3] == 0], -0.1)


def test_verifier_order_is_preserved_when_alpha_plus_beta_below_one():
  rs = np.random.RandomState(1)
  for _ in range(20):
    scores = rs.randn(4, 8).astype(np.float32) * 3
    rule = (rs.rand(4, 8) > 0.5).astype(np.float32)
    r = np.asarray(hero.stratified_normalize(jnp.asarray(scores), jnp.asarray(rule),
                                             jnp.ones((4, 8), bool), alpha=0.3, beta=0.6))
    for p in range(4):
      pos, neg = r[p][rule[p] == 1], r[p][rule[p] == 0]
      if pos.size and neg.size:
        assert pos.min() > neg.max()


def test_variance_weight_and_sigma_bar_match_numpy():
  scores, _, valid = _groups(2)
  sigma = np.array([scores[p][valid[p]].std() for p in range(6)])
  np.testing.assert_allclose(np.asarray(hero.group_std(jnp.asarray(scores), jnp.asarray(valid))),
                             sigma, rtol=1e-5)
  sigma_bar = 0.8
  w = hero.variance_weight(jnp.asarray(sigma), jnp.asarray(sigma_bar), w_min=0.4, w_max=3.0, k=6)
  ref = 0.4 + 2.6 / (1 + np.exp(-6 * (sigma - sigma_bar)))
  np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-5)
  assert (np.asarray(w) >= 0.4).all() and (np.asarray(w) <= 3.0).all()
  has = jnp.ones(6, bool)
  first = hero.update_sigma_bar(jnp.asarray(jnp.nan), jnp.asarray(sigma), has)
  assert float(first) == pytest.approx(sigma.mean(), rel=1e-5)
  second = hero.update_sigma_bar(first, jnp.asarray(sigma * 2), has, decay=0.9)
  assert float(second) == pytest.approx(0.9 * sigma.mean() + 0.1 * 2 * sigma.mean(), rel=1e-5)


def test_group_std_normalization_cancels_a_reward_weight_but_not_an_advantage_weight():
  scores, rule, valid = _groups(3)
  r_hat = hero.stratified_normalize(jnp.asarray(scores), jnp.asarray(rule), jnp.asarray(valid),
                                    alpha=0.1, beta=0.1)
  w = jnp.linspace(0.5, 2.0, 6)
  plain = pg.group_advantages(r_hat, jnp.asarray(valid))
  on_reward = pg.group_advantages(r_hat * w[:, None], jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(on_reward), np.asarray(plain), atol=1e-4)
  on_advantage = plain * w[:, None]
  assert not np.allclose(np.asarray(on_advantage), np.asarray(plain), atol=1e-3)


def test_gradients_flow_only_through_the_policy():
  scores, rule, valid = _groups(4)
  logp = jnp.asarray(np.random.RandomState(0).randn(30, 3) * 0.1 - 1, jnp.float32)

  def loss(logprobs, rm_scores):
    r_hat = hero.stratified_normalize(rm_scores, jnp.asarray(rule), jnp.asarray(valid),
                                      alpha=0.1, beta=0.1)
    adv = pg.group_advantages(r_hat, jnp.asarray(valid)).reshape(-1)
    return pg.pg_loss(logprobs, logprobs, adv, jnp.ones((30, 3), bool), pg.PGConfig())[0]

  g_policy, g_rm = jax.grad(loss, argnums=(0, 1))(logp, jnp.asarray(scores))
  assert float(jnp.abs(g_policy).max()) > 0
  assert float(jnp.abs(g_rm).max()) == 0.0


def _batch(seed=5):
  rs = np.random.RandomState(seed)
  rule = jnp.asarray((rs.rand(4, 6) > 0.5).astype(np.float32))
  rm = jnp.asarray(rs.randn(4, 6).astype(np.float32))
  return rule, rm, jnp.ones((4, 6), bool)


def test_reward_modes_compose_as_documented():
  rule, rm, valid = _batch()
  nan = jnp.asarray(jnp.nan)
  adv, r, _, _ = hero.shaped_advantages(hero.RewardConfig(mode="verifier"), rule, None, valid, nan)
  np.testing.assert_allclose(np.asarray(r), np.asarray(rule))
  np.testing.assert_allclose(np.asarray(adv), np.asarray(pg.group_advantages(rule, valid)), atol=1e-6)
  _, r, _, _ = hero.shaped_advantages(hero.RewardConfig(mode="rm"), rule, rm, valid, nan)
  np.testing.assert_allclose(np.asarray(r), 1 / (1 + np.exp(-np.asarray(rm))), rtol=1e-5)
  _, r, _, _ = hero.shaped_advantages(hero.RewardConfig(mode="naive_sum", naive_weight=0.3),
                                      rule, rm, valid, nan)
  np.testing.assert_allclose(np.asarray(r), np.asarray(rule) + 0.3 / (1 + np.exp(-np.asarray(rm))),
                             rtol=1e-5)
  cfg = hero.RewardConfig(mode="hero", variance_weighting=False, alpha=0.1, beta=0.1)
  _, r, _, _ = hero.shaped_advantages(cfg, rule, rm, valid, nan)
  ref = np_stratified(np.asarray(rm), np.asarray(rule), np.ones((4, 6), bool), 0.1, 0.1, 1e-6, "both")
  np.testing.assert_allclose(np.asarray(r), ref, rtol=1e-5, atol=1e-6)


def test_variance_weight_placement_and_running_sigma_bar():
  rule, rm, valid = _batch(6)
  nan = jnp.asarray(jnp.nan)
  base = hero.RewardConfig(mode="hero", variance_weighting=False)
  plain, _, _, _ = hero.shaped_advantages(base, rule, rm, valid, nan)
  on_adv = hero.RewardConfig(mode="hero", placement="advantage")
  adv, _, sigma_bar, metrics = hero.shaped_advantages(on_adv, rule, rm, valid, nan)
  sigma = np.asarray(rm).std(-1)
  assert float(sigma_bar) == pytest.approx(sigma.mean(), rel=1e-5)  # first batch initialises
  w = 0.4 + 2.6 / (1 + np.exp(-6 * (sigma - sigma.mean())))
  np.testing.assert_allclose(np.asarray(adv), np.asarray(plain) * w[:, None], rtol=1e-4, atol=1e-6)
  # on the reward, group std normalization cancels the weight ...
  on_reward = hero.RewardConfig(mode="hero", placement="reward")
  adv_r, _, _, _ = hero.shaped_advantages(on_reward, rule, rm, valid, nan)
  np.testing.assert_allclose(np.asarray(adv_r), np.asarray(plain), atol=1e-3)
  # ... but not without std normalization
  adv_none, _, _, _ = hero.shaped_advantages(on_reward, rule, rm, valid, nan, std_mode="none")
  plain_none, _, _, _ = hero.shaped_advantages(base, rule, rm, valid, nan, std_mode="none")
  np.testing.assert_allclose(np.asarray(adv_none), np.asarray(plain_none) * w[:, None],
                             rtol=1e-4, atol=1e-6)
  _, _, second, _ = hero.shaped_advantages(on_adv, rule, rm * 2, valid, sigma_bar)
  assert float(second) == pytest.approx(0.9 * sigma.mean() + 0.1 * 2 * sigma.mean(), rel=1e-5)
  assert "hero_weight_mean" in metrics


def test_reward_config_rejects_bad_values():
  with pytest.raises(ValueError, match="reward mode"):
    hero.RewardConfig(mode="sum")
  with pytest.raises(ValueError, match="placement"):
    hero.RewardConfig(placement="loss")


def test_hero_arms_refuse_regimes_the_data_does_not_have():
  """The pod preset trains on MATH, which has no easy / hard families: its regimes are
  'all'; an easy regime there, or an unknown name, is one line before any stage runs."""
  from configs import hero as hero_configs
  from experiments import hero as hero_experiment
  from hybrid_rl import errors
  pod = hero_configs.get_config("pod")
  arms = hero_experiment.arm_list(pod)
  assert {regime for _, regime, _, _ in arms} == {"all"} and len(arms) > 3
  assert all(hero_experiment.REGIMES[r] == "" for _, r, _, _ in arms)
  pod.hero.regimes = "easy"
  with pytest.raises(errors.ConfigError, match="synthetic_math families; use 'all'"):
    hero_experiment.arm_list(pod)
  tiny = hero_configs.get_config("tiny")
  tiny.hero.regimes = "easy,medium"
  with pytest.raises(errors.ConfigError, match="unknown 'medium'"):
    hero_experiment.arm_list(tiny)
  evals = [{"overall": {"avg@k": 40.0}, "family": {"math": {"avg@k": 40.0}}}] * 2
  assert list(hero_experiment.ours(pod, evals)) == ["math (ours)"]
