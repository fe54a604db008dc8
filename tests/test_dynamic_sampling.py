"""DAPO's dynamic sampling: which groups a step keeps, how it refills and where it stops,
on scripted verifier rewards (no model: the stage's collect_fixed is replaced)."""
import jax
import numpy as np
import pytest

from configs import default
from hybrid_rl.adaptive import dynamic_sampling
from hybrid_rl.parallel import sharding
from hybrid_rl.rewards import hero
from hybrid_rl.train import batches
from hybrid_rl.train import grpo_stage


def test_informative_groups_and_selection():
  rewards = np.array([[1, 1, 1], [0, 1, 1], [0.5, 0.5, 0.2], [0, 0, 0]], float)
  valid = np.ones((4, 3), bool)
  assert dynamic_sampling.informative_groups(rewards).tolist() == [False, True, True, False]
  valid[1, 0] = False  # the differing response is padding: the rest are equal
  assert dynamic_sampling.informative_groups(rewards, valid).tolist() == [False, False, True,
                                                                         False]
  drawn = [np.array([False, True, False, True]), np.array([True, False, False, False])]
  assert dynamic_sampling.enough(drawn, 3) and not dynamic_sampling.enough(drawn, 4)
  chosen, kept = dynamic_sampling.select(drawn, 3)
  assert chosen == [(0, 1), (0, 3), (1, 0)] and kept.all()
  # Short after the cap: the first uninformative groups fill in, marked.
  chosen, kept = dynamic_sampling.select(drawn, 5)
  assert chosen == [(0, 1), (0, 3), (1, 0), (0, 0), (0, 2)]
  assert kept.tolist() == [True, True, True, False, False]
  with pytest.raises(ValueError, match="9 needed"):
    dynamic_sampling.select(drawn, 9)


# Per call (a batch of 4 prompts x 2 responses), the verifier's rewards of each group.
SCRIPT = [
    [[1, 1], [0, 1], [0, 0], [1, 0]],  # 2 informative
    [[0, 1], [1, 1], [0, 0], [0, 0]],  # 1
    [[1, 0], [0, 1], [1, 1], [0, 1]],  # 3
]


def _context(max_batches: int, advantage: str = "grpo"):
  config = default.get_config("micro")
  config.train.batch_size, config.sampling.num_samples = 4, 2
  config.rl.update(sampling="dynamic", advantage=advantage,
                   std_mode="none" if advantage != "grpo" else "group")
  config.rl.dynamic.max_batches = max_batches
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  return grpo_stage.StepContext(
      config=config, graphdef=None, tokenizer=None, mesh=mesh, local_mesh=mesh, pool=None,
      sp=None, reward_cfg=grpo_stage.reward_config(config), ada_cfg=None)


def _scripted(monkeypatch, ctx):
  calls = []

  def collect_fixed(ctx_, params, prompt_texts, golds, key):
    k = len(calls)
    calls.append(prompt_texts)
    rule = np.array(SCRIPT[k], np.float32).reshape(-1)
    # Token rows that say which call and row they came from.
    tokens = np.stack([np.full(6, 100 * k + i, np.int32) for i in range(8)])
    return grpo_stage.Scored(
        batch=batches.PGBatch(tokens=ctx.rows(tokens), valid=ctx.rows(np.ones((8, 6), bool)),
                              mask=ctx.rows(np.ones((8, 3), bool)),
                              sampler_logprobs=ctx.rows(np.zeros((8, 3), np.float32))),
        rule=rule, oracle=rule, statuses={"ok": 8}, samples=8, tokens_generated=24,
        lengths=np.full(8, 3), host_means={"truncated_fraction": np.zeros(8, bool)},
        seconds={"seconds_sampling": 1.0, "seconds_verifying": 0.5})
  monkeypatch.setattr(grpo_stage, "collect_fixed", collect_fixed)
  draw = lambda k: ([f"batch {k} prompt {i}" for i in range(4)], ["1"] * 4)
  return calls, draw


def test_draws_until_the_batch_is_full_and_keeps_informative_groups(monkeypatch):
  ctx = _context(max_batches=4)
  calls, draw = _scripted(monkeypatch, ctx)
  scored = grpo_stage.collect_dynamic(ctx, None, draw, jax.random.PRNGKey(0), float("nan"))
  assert len(calls) == 3 and calls[2][0] == "batch 2 prompt 0"  # 2 + 1 < 4 <= 2 + 1 + 3
  assert scored.batches_drawn == 3 and scored.samples == 24 and scored.tokens_generated == 72
  assert scored.seconds == {"seconds_sampling": 3.0, "seconds_verifying": 1.5}
  assert scored.statuses == {"ok": 24}
  # Groups (call 0, 1), (0, 3), (1, 0), (2, 0): rows 2-3, 6-7 of call 0, 0-1 of 1 and 2.
  tokens = np.asarray(scored.batch.tokens)[:, 0]
  assert tokens.tolist() == [2, 3, 6, 7, 100, 101, 200, 201]
  assert scored.group_valid.all() and np.asarray(scored.batch.mask).all()
  assert scored.rule.tolist() == [0, 1, 1, 0, 0, 1, 1, 0]
  assert scored.host_means["dynamic_batches"] == 3
  assert np.mean(scored.host_means["dynamic_zero_adv_before"]) == pytest.approx(6 / 12)
  adv, _, _, _ = grpo_stage.advantages(ctx, scored, float("nan"))
  assert (np.ptp(np.asarray(adv), axis=1) > 0).all()  # every kept group carries a gradient


@pytest.mark.parametrize("advantage", ["grpo", "reinforce_pp"])
def test_the_cap_trains_on_what_was_collected(monkeypatch, advantage):
  ctx = _context(max_batches=2, advantage=advantage)
  calls, draw = _scripted(monkeypatch, ctx)
  scored = grpo_stage.collect_dynamic(ctx, None, draw, jax.random.PRNGKey(0), float("nan"))
  assert len(calls) == 2 and scored.batches_drawn == 2
  # 3 informative groups, then the first uninformative one drawn (call 0, group 0).
  assert np.asarray(scored.batch.tokens)[:, 0].tolist() == [2, 3, 6, 7, 100, 101, 0, 1]
  assert scored.group_valid[:, 0].tolist() == [True, True, True, False]
  mask = np.asarray(scored.batch.mask)
  assert mask[:6].all() and not mask[6:].any()  # the filler's rows carry no tokens
  assert scored.host_means["dynamic_filled_fraction"].tolist() == [False] * 3 + [True]
  adv, rewards, _, _ = grpo_stage.advantages(ctx, scored, float("nan"))
  adv = np.asarray(adv)
  assert (adv[3] == 0).all() and (np.ptp(adv[:3], axis=1) > 0).all()
  if advantage == "reinforce_pp":  # batch statistics over the valid groups only
    assert abs(adv[:3].mean()) < 1e-5


def test_hero_rewards_decide_which_groups_are_informative():
  """Composed with HERO, a group is informative when its shaped rewards differ: the
  reward model separates responses the verifier scores alike."""
  rule = np.array([[1, 1], [0, 0], [1, 1]], np.float32)
  rm = np.array([[2.0, -1.0], [0.5, 0.5], [0.3, 0.3]], np.float32)
  cfg = hero.RewardConfig(mode="hero")
  _, rewards, _, _ = hero.shaped_advantages(cfg, rule, rm, np.ones((3, 2), bool),
                                            np.float32("nan"))
  assert dynamic_sampling.informative_groups(np.asarray(rewards)).tolist() == [True, False,
                                                                               False]
  assert not dynamic_sampling.informative_groups(rule).any()
