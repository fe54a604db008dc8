"""Learning-speed figures (seed-mean curves, first crossing of a target) and the
minimum detectable difference of a paired comparison, against direct computation and
simulation."""
import numpy as np
import pytest
from scipy import stats

from hybrid_rl.eval import learning_speed as speed
from hybrid_rl.eval import paired


def test_mean_curve_averages_the_steps_every_seed_logged():
  runs = [[{"step": 1, "r": 1.0}, {"step": 2, "r": 2.0, "eval/avg@k": 0.2},
           {"step": 4, "r": 4.0, "eval/avg@k": 0.6}],
          [{"step": 1, "r": 3.0}, {"step": 2, "r": 4.0, "eval/avg@k": 0.4},
           {"step": 3, "r": 9.0}, {"step": 4, "r": 0.0}]]
  curve = speed.mean_curve(runs, ["r", "eval/avg@k"])
  assert [row["step"] for row in curve] == [1, 2, 4]  # step 3: one seed only
  assert curve[0] == {"step": 1, "r": 2.0}
  assert curve[1]["r"] == 3.0 and abs(curve[1]["eval/avg@k"] - 0.3) < 1e-12
  assert "eval/avg@k" not in curve[2]  # seed 1 did not evaluate at step 4


def test_first_reach_and_totals():
  rows = speed.with_totals([{"step": s, "seconds_rollout_and_update": 2.0,
                             "eval/avg@k": v} for s, v in ((1, 0.1), (2, 0.5), (3, 0.4))])
  assert [r["seconds_total"] for r in rows] == [2.0, 4.0, 6.0]
  assert speed.first_reach(rows, 0.4)["step"] == 2
  assert speed.first_reach(rows, 0.5)["step"] == 2  # reaching counts, not exceeding
  assert speed.first_reach(rows, 0.6) is None
  assert speed.final_value(rows) == 0.4 and np.isnan(speed.final_value([{"step": 1}]))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_minimum_detectable_difference_has_the_stated_power(n):
  # Per-seed differences of sample sd 0.5 over n seeds give an MDD; simulated
  # experiments of n seeds whose true difference is that MDD (and true sd 0.5) are
  # detected by a paired t-test at 5% 4 times in 5 (at n = 3 the normal-quantile
  # approximation's MDD had power 0.77).
  rng = np.random.default_rng(0)
  sd = 0.5
  z = rng.normal(size=n)
  mdd = paired.minimum_detectable_difference((z - z.mean()) / z.std(ddof=1) * sd + 3.0)
  draws = rng.normal(mdd, sd, size=(100000, n))
  t = draws.mean(1) / (draws.std(1, ddof=1) / np.sqrt(n))
  power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
  assert abs(power - 0.80) < 0.006, power  # 100,000 draws: the estimate's sd is 0.0013
  assert abs(paired.t_test_power(mdd, sd, n) - 0.80) < 1e-9
  assert np.isnan(paired.minimum_detectable_difference([1.0]))
  assert paired.minimum_detectable_difference([1.0, 1.0]) == 0.0  # no spread
