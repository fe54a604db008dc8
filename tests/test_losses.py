"""Losses against NumPy references (values and gradients) and their invariants."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.algorithms import distillation
from hybrid_rl.algorithms import policy_gradient as pg
from hybrid_rl.algorithms import reward_model

RNG = np.random.RandomState(0)


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# ------------------------------------------------------------- NumPy references

def np_pg_loss(logp, old, adv, mask, cfg, ref=None, sampler=None, ent=None):
  adv = adv if adv.ndim == 2 else adv[:, None]
  if cfg.importance_level == "sequence":  # GSPO: s_i = (pi(y_i) / pi_old(y_i))^(1 / |y_i|)
    m = mask.astype(np.float64)
    s = np.exp(((logp - old) * m).sum(-1) / np.maximum(m.sum(-1), 1))
    ratio = np.repeat(s[:, None], logp.shape[1], axis=1)
    low, high = cfg.sequence_epsilon_low, cfg.sequence_epsilon_high
  else:
    ratio = np.exp(logp - old)
    low, high = cfg.epsilon_low, cfg.epsilon_high
  l1, l2 = -adv * ratio, -adv * np.clip(ratio, 1 - low, 1 + high)
  loss = np.maximum(l1, l2)
  if cfg.dual_clip:
    loss = np.where(adv < 0, np.minimum(loss, -adv * cfg.dual_clip), loss)
  if sampler is not None and cfg.tis_cap:
    log_w = old - sampler
    if cfg.importance_level == "sequence":
      m = mask.astype(np.float64)
      log_w = ((log_w * m).sum(-1) / np.maximum(m.sum(-1), 1))[:, None]
    loss = loss * np.minimum(np.exp(log_w), cfg.tis_cap)
  if ref is not None and cfg.kl_coef:
    d = ref - logp
    kl = {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - d - 1}[cfg.kl_estimator]
    loss = loss + cfg.kl_coef * kl
  if ent is not None and cfg.entropy_coef:
    loss = loss - cfg.entropy_coef * ent
  m = mask.astype(np.float64)
  if cfg.aggregation == "token_mean":
    return (loss * m).sum() / m.sum()
  if cfg.aggregation == "seq_mean_token_mean":
    lens = m.sum(-1)
    keep = lens > 0
    return ((loss * m).sum(-1)[keep] / lens[keep]).mean()
  return (loss * m).sum() / m.size


def np_advantages(rewards, valid, std_mode, baseline=None, eps=1e-6):
  out = np.zeros_like(rewards)
  all_r = rewards[valid]
  for p in range(rewards.shape[0]):
    r = rewards[p][valid[p]]
    if r.size == 0:
      continue
    b = r.mean() if baseline is None else baseline[p]
    a = r - b
    if std_mode == "group":
      a = a / ((r.std(ddof=1) if r.size > 1 else 0.0) + eps)
    elif std_mode == "batch":
      a = a / (all_r.std(ddof=1) + eps)
    out[p][valid[p]] = a
  return out


def _pg_inputs(n=6, r=9):
  logp = RNG.randn(n, r) * 0.3 - 2.0
  old = logp + RNG.randn(n, r) * 0.3
  adv = RNG.randn(n)
  mask = RNG.rand(n, r) > 0.25
  mask[0] = False  # an empty row
  ref = logp + RNG.randn(n, r) * 0.2
  sampler = old + RNG.randn(n, r) * 0.2
  ent = RNG.rand(n, r)
  return logp, old, adv, mask, ref, sampler, ent


CONFIGS = [
    pg.PGConfig(),
    pg.PGConfig(epsilon_high=0.28, dual_clip=3.0, aggregation="seq_mean_token_mean"),
    pg.PGConfig(kl_coef=0.1, kl_estimator="k1", aggregation="seq_mean_token_sum_norm"),
    pg.PGConfig(kl_coef=0.05, kl_estimator="k2", entropy_coef=0.01, tis_cap=2.0),
    pg.PGConfig(kl_coef=0.2, kl_estimator="k3", dual_clip=10.0, epsilon_low=0.1),
    # GSPO: the sequence ratio (its objective aggregates per sequence), a clip range wide
    # enough that some rows are clipped and some not, and its paper's range.
    pg.PGConfig(importance_level="sequence", aggregation="seq_mean_token_mean",
                sequence_epsilon_low=0.05, sequence_epsilon_high=0.1),
    pg.PGConfig(importance_level="sequence", sequence_epsilon_low=0.1,
                sequence_epsilon_high=0.2, dual_clip=3.0, tis_cap=2.0),
    pg.PGConfig(importance_level="sequence", aggregation="seq_mean_token_mean"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_pg_loss_value_and_gradient_match_numpy(cfg):
  logp, old, adv, mask, ref, sampler, ent = _pg_inputs()
  f = lambda lp: pg.pg_loss(lp, jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32),
                            jnp.asarray(mask), cfg, ref_logprobs=jnp.asarray(ref, jnp.float32),
                            sampler_logprobs=jnp.asarray(sampler, jnp.float32),
                            entropy=jnp.asarray(ent, jnp.float32))[0]
  ref_fn = lambda lp: np_pg_loss(lp, old, adv, mask, cfg, ref, sampler, ent)
  np.testing.assert_allclose(float(f(jnp.asarray(logp, jnp.float32))), ref_fn(logp), rtol=1e-5,
                             atol=1e-6)
  grad = np.asarray(jax.grad(f)(jnp.asarray(logp, jnp.float32)))
  fd = np.zeros_like(logp)
  h = 1e-6
  for idx in np.ndindex(logp.shape):
    e = np.zeros_like(logp)
    e[idx] = h
    fd[idx] = (ref_fn(logp + e) - ref_fn(logp - e)) / (2 * h)
  np.testing.assert_allclose(grad, fd, atol=2e-5)


def test_first_epoch_ratio_is_one_and_gradient_is_reinforce():
  logp, _, adv, mask, *_ = _pg_inputs()
  lp = jnp.asarray(logp, jnp.float32)
  cfg = pg.PGConfig(epsilon_high=0.28, dual_clip=10.0)
  loss_fn = lambda x: pg.pg_loss(x, lp, jnp.asarray(adv, jnp.float32), jnp.asarray(mask), cfg)
  _, metrics = loss_fn(lp)
  assert float(metrics["ratio_mean"]) == pytest.approx(1.0, abs=1e-7)
  assert float(metrics["clip_fraction"]) == 0.0
  grad = np.asarray(jax.grad(lambda x: loss_fn(x)[0])(lp))
  expected = -adv[:, None] * mask / mask.sum()  # d/dlogp of -A * logp, token mean
  np.testing.assert_allclose(grad, expected, atol=1e-7)


def test_sequence_ratio_equals_the_sequence_likelihood_ratio_and_clips_whole_rows():
  """GSPO's s_i is (pi(y_i) / pi_old(y_i))^(1/|y_i|) at every token of row i: a row is
  clipped or not as a whole, and at pi = pi_old every ratio is 1."""
  logp, old, adv, mask, *_ = _pg_inputs()
  cfg = pg.PGConfig(importance_level="sequence", sequence_epsilon_low=0.05,
                    sequence_epsilon_high=0.1)
  args = (jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32), jnp.asarray(mask), cfg)
  _, at_old = pg.pg_loss(*args[:1] * 2, *args[1:])
  assert float(at_old["ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
  grad = np.asarray(jax.grad(lambda lp: pg.pg_loss(lp, *args)[0])(jnp.asarray(logp, jnp.float32)))
  m = mask.astype(np.float64)
  s = np.exp(((logp - old) * m).sum(-1) / np.maximum(m.sum(-1), 1))
  clipped = np.where(adv > 0, s > 1.1, s < 0.95)
  rows = m.sum(-1) > 0
  assert clipped[rows].any() and (~clipped[rows]).any()
  assert (grad[clipped] == 0).all()  # a clipped row passes no gradient to any token
  assert (np.abs(grad[~clipped & rows]).sum(-1) > 0).all()


def np_rloo(rewards, valid):
  out = np.zeros_like(rewards)
  for p in range(rewards.shape[0]):
    idx = np.flatnonzero(valid[p])
    for i in idx:
      others = [rewards[p, j] for j in idx if j != i]
      out[p, i] = rewards[p, i] - np.mean(others) if others else 0.0
  return out


def np_reinforce_pp(rewards, valid, eps=1e-6):
  centered = np_advantages(rewards, valid, "none")
  c = centered[valid]
  out = np.zeros_like(rewards)
  out[valid] = (c - c.mean()) / (c.std(ddof=1) + eps)
  return out


@pytest.mark.parametrize("estimator", ["rloo", "reinforce_pp"])
def test_rloo_and_reinforce_pp_advantages_match_numpy(estimator):
  rewards = RNG.rand(5, 6).round(1)
  valid = np.ones((5, 6), bool)
  valid[1, 4:] = False  # padded group
  valid[2, 1:] = False  # singleton group
  rewards[3] = 1.0  # all-equal group
  ours = np.asarray(pg.advantages(jnp.asarray(rewards), jnp.asarray(valid), estimator=estimator,
                                  std_mode="none"))
  want = (np_rloo if estimator == "rloo" else np_reinforce_pp)(rewards, valid)
  np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
  assert (ours[~valid] == 0).all()
  if estimator == "rloo":  # n / (n - 1) times GRPO's unscaled advantage
    n = valid.sum(-1, keepdims=True)
    grpo = np.asarray(pg.group_advantages(jnp.asarray(rewards), jnp.asarray(valid),
                                          std_mode="none"))
    np.testing.assert_allclose(ours[n[:, 0] > 1], (grpo * n / np.maximum(n - 1, 1))[n[:, 0] > 1],
                               rtol=1e-5, atol=1e-6)
  else:  # zero mean and unit std over the batch's valid responses
    assert abs(ours[valid].mean()) < 1e-5 and ours[valid].std(ddof=1) == pytest.approx(1, 1e-4)
  with pytest.raises(ValueError, match="std_mode 'none'"):
    pg.advantages(jnp.asarray(rewards), jnp.asarray(valid), estimator=estimator,
                  std_mode="group")


@pytest.mark.parametrize("std_mode", ["group", "batch", "none"])
@pytest.mark.parametrize("with_baseline", [False, True])
def test_group_advantages_match_numpy(std_mode, with_baseline):
  rewards = RNG.rand(5, 6).round(1)
  valid = np.ones((5, 6), bool)
  valid[1, 4:] = False  # padded group
  valid[2, 1:] = False  # singleton group
  rewards[3] = 1.0  # all-equal group
  baseline = RNG.rand(5) if with_baseline else None
  ours = pg.group_advantages(jnp.asarray(rewards), jnp.asarray(valid), std_mode=std_mode,
                             baseline=None if baseline is None else jnp.asarray(baseline))
  np.testing.assert_allclose(np.asarray(ours), np_advantages(rewards, valid, std_mode, baseline),
                             rtol=1e-5, atol=1e-5)
  assert (np.asarray(ours)[~valid] == 0).all()


def test_k3_estimator_is_unbiased():
  logits_pi = RNG.randn(12)
  logits_ref = logits_pi + RNG.randn(12) * 0.7
  lp, lr = _np_log_softmax(logits_pi), _np_log_softmax(logits_ref)
  exact = float((np.exp(lp) * (lp - lr)).sum())
  samples = np.asarray(jax.random.categorical(jax.random.PRNGKey(0), jnp.asarray(lp), shape=(400_000,)))
  est = pg.kl_penalty(jnp.asarray(lp[samples]), jnp.asarray(lr[samples]), "k3")
  k1 = pg.kl_penalty(jnp.asarray(lp[samples]), jnp.asarray(lr[samples]), "k1")
  assert float(est.mean()) == pytest.approx(exact, rel=0.02)
  assert float(k1.mean()) == pytest.approx(exact, rel=0.02)
  assert float(est.min()) >= 0  # k3 is non-negative per sample


# --------------------------------------------------------------- distillation

def _logits(shape, seed):
  return np.random.RandomState(seed).randn(*shape).astype(np.float32) * 1.5


def test_cross_entropy_forward_reverse_kl_and_jsd_match_numpy():
  s, t = _logits((3, 5, 11), 1), _logits((3, 5, 11), 2)
  mask = np.random.RandomState(3).rand(3, 5) > 0.3
  targets = np.random.RandomState(4).randint(0, 11, (3, 5))
  ls, lt = _np_log_softmax(s.astype(np.float64)), _np_log_softmax(t.astype(np.float64))
  ps, pt = np.exp(ls), np.exp(lt)
  mean = lambda x: (x * mask).sum() / mask.sum()
  ce = mean(-np.take_along_axis(ls, targets[..., None], -1)[..., 0])
  fkl = mean((pt * (lt - ls)).sum(-1))
  rkl = mean((ps * (ls - lt)).sum(-1))
  S, T, M = jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask)
  np.testing.assert_allclose(float(distillation.cross_entropy(S, jnp.asarray(targets), M)), ce, rtol=1e-5)
  np.testing.assert_allclose(float(distillation.forward_kl(S, T, M)), fkl, rtol=1e-5)
  np.testing.assert_allclose(float(distillation.reverse_kl(S, T, M)), rkl, rtol=1e-5)
  for beta in (0.3, 0.7):  # endpoints: forward / reverse KL (GKD convention), below
    m = beta * pt + (1 - beta) * ps
    ref = mean(beta * (pt * (lt - np.log(m))).sum(-1) + (1 - beta) * (ps * (ls - np.log(m))).sum(-1))
    np.testing.assert_allclose(float(distillation.generalized_jsd(S, T, M, beta)), ref,
                               rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(float(distillation.generalized_jsd(S, T, M, 0.0)), fkl, rtol=1e-5)
  np.testing.assert_allclose(float(distillation.generalized_jsd(S, T, M, 1.0)), rkl, rtol=1e-5)


def test_top_k_forward_kl_matches_numpy_and_equals_full_kl_at_full_k():
  s, t = _logits((2, 4, 9), 5), _logits((2, 4, 9), 6)
  mask = np.ones((2, 4), bool)
  k = 3
  lt = _np_log_softmax(t.astype(np.float64))
  ids = np.argsort(-lt, -1)[..., :k]
  top = np.take_along_axis(lt, ids, -1)
  top_norm = top - np.log(np.exp(top).sum(-1, keepdims=True))
  ls_top = np.take_along_axis(_np_log_softmax(s.astype(np.float64)), ids, -1)
  ref = (np.exp(top_norm) * (top_norm - ls_top)).sum(-1).mean()
  values, got_ids = distillation.teacher_top_k(jnp.asarray(t), k)
  ours = distillation.top_k_forward_kl(jnp.asarray(s), values, got_ids, jnp.asarray(mask))
  np.testing.assert_allclose(float(ours), ref, rtol=1e-5)
  values, got_ids = distillation.teacher_top_k(jnp.asarray(t), 9)
  full = distillation.forward_kl(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask))
  np.testing.assert_allclose(float(distillation.top_k_forward_kl(jnp.asarray(s), values, got_ids,
                                                                 jnp.asarray(mask))),
                             float(full), rtol=1e-5)


def test_kl_is_zero_for_equal_models_and_positive_otherwise():
  s, t = jnp.asarray(_logits((2, 3, 7), 7)), jnp.asarray(_logits((2, 3, 7), 8))
  m = jnp.ones((2, 3), bool)
  for fn in (distillation.forward_kl, distillation.reverse_kl,
             lambda a, b, mm: distillation.generalized_jsd(a, b, mm, 0.5)):
    assert abs(float(fn(s, s, m))) < 1e-6
    assert float(fn(s, t, m)) > 1e-3


def test_opd_reward_is_zero_when_teacher_equals_student():
  lp = jnp.asarray(RNG.randn(4, 6) * 0.5 - 1.0, jnp.float32)
  mask = jnp.ones((4, 6), bool)
  loss, metrics = distillation.opd_pg_loss(lp, lp, lp, mask)
  assert float(metrics["opd_reward"]) == 0.0 and float(loss) == 0.0
  grad = jax.grad(lambda x: distillation.opd_pg_loss(x, lp, lp, mask)[0])(lp)
  assert float(jnp.abs(grad).max()) == 0.0
  teacher = lp + 0.3
  # gradient pushes up log pS where the teacher is more likely: -A / n per token
  grad = jax.grad(lambda x: distillation.opd_pg_loss(x, lp, teacher, mask)[0])(lp)
  np.testing.assert_allclose(np.asarray(grad), -0.3 / 24 * np.ones((4, 6)), rtol=1e-5)


# -------------------------------------------------------------- reward model

def test_reward_losses_match_numpy():
  c, r = RNG.randn(8), RNG.randn(8)
  sig = lambda x: 1 / (1 + np.exp(-x))
  bt, m = reward_model.bradley_terry_loss(jnp.asarray(c), jnp.asarray(r))
  np.testing.assert_allclose(float(bt), -np.log(sig(c - r)).mean(), rtol=1e-5)
  assert float(m["pair_accuracy"]) == pytest.approx((c > r).mean())
  labels = (RNG.rand(8) > 0.5).astype(np.float32)
  pw, m = reward_model.pointwise_loss(jnp.asarray(c), jnp.asarray(labels))
  ref = -(labels * np.log(sig(c)) + (1 - labels) * np.log(1 - sig(c))).mean()
  np.testing.assert_allclose(float(pw), ref, rtol=1e-5)


def test_bad_options_are_rejected():
  with pytest.raises(ValueError, match="kl_estimator"):
    pg.PGConfig(kl_estimator="k4")
  with pytest.raises(ValueError, match="aggregation"):
    pg.PGConfig(aggregation="sum")
  with pytest.raises(ValueError, match="dual_clip"):
    pg.PGConfig(dual_clip=0.5)
  with pytest.raises(ValueError, match="jsd beta"):
    distillation.generalized_jsd(jnp.zeros((1, 1, 2)), jnp.zeros((1, 1, 2)), jnp.ones((1, 1)), 1.5)
