"""Paired comparisons: per seed (a quickstart summary) and per problem (one model
before and after training).

Arms of one seed share its SFT cold start, so the per-seed difference of two
arms cancels the cold start's own spread: an ordering holds beyond noise when
the 95% t-interval of those differences excludes 0. A single run measured on
the same problems before and after is compared problem by problem
(`problem_difference`).
"""
import math

import numpy as np
from scipy import integrate
from scipy import optimize
from scipy import stats

from hybrid_rl.eval import tables


def _comparisons(s: dict) -> list[tuple[str, list, list]]:
  """(name, a, b) per-seed lists of each paper's headline comparison the run holds."""
  pairs = []
  if "gain" in s.get("slice", {}):
    pairs.append(("slice: GRPO - SFT (validation)", s["slice"]["grpo"], s["slice"]["sft"]))
  hero = s.get("hero", {})
  for regime in ("easy", "hard", "mixed"):
    for other in ("verifier", "rm"):
      a, b = hero.get(f"{regime}-hero"), hero.get(f"{regime}-{other}")
      for family in ("easy", "hard") if a and b else ():
        pairs.append((f"HERO: {regime} regime, HERO - {other} ({family} test)", a[family],
                      b[family]))
  for arm in sorted(k for k in hero if "-hero-" in k or k.endswith("-naive")):
    base = hero.get(arm.split("-")[0] + "-hero")
    for family in ("easy", "hard") if base else ():
      pairs.append((f"HERO ablation: {arm} - {arm.split('-')[0]}-hero ({family} test)",
                    hero[arm][family], base[family]))
  ada = s.get("reinforce_ada", {})
  for arm, base in (("ada_pos", "grpo"), ("ada_balance", "grpo"), ("dynamic", "grpo"),
                    ("ada_balance", "dynamic")):
    if arm in ada and base in ada:
      pairs.append((f"Reinforce-Ada: {arm} - {base} (test)", ada[arm], ada[base]))
  if "teacher" in s:
    t = s["teacher"]
    pairs.append(("sparse-to-dense: teacher - student, cold starts (test)", t["cold_start"],
                  s["student_cold_start"]))
    pairs.append(("sparse-to-dense: teacher after - before Stage 1 (test)", t["after_stage1"],
                  t["cold_start"]))
  s2d = s.get("sparse_to_dense", {})
  for a, b in (("recipe", "start"), ("recipe", "direct_grpo"), ("stage3", "recipe"),
               ("stage3", "replay"), ("recipe", "pre_rl_bridge"), ("recipe", "fkl_only"),
               ("recipe", "opd_only")):
    if a in s2d and b in s2d:
      pairs.append((f"sparse-to-dense: {a} - {b} (student, test)", s2d[a], s2d[b]))
  return pairs


def t_test_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
  """Power of the two-sided paired t-test at level alpha to detect a true mean
  difference `difference` from n pairs whose differences have standard deviation sd:
  P(|T| > t_{1-alpha/2, n-1}) for T noncentral t with noncentrality difference *
  sqrt(n) / sd. T = (Z + nc) / sqrt(V / df) with V chi-square(df), so the power is the
  chi-square average of two normal tails (scipy's nct returns nan at df = 1)."""
  df, nc = n - 1, difference * math.sqrt(n) / sd
  critical = stats.t.ppf(1 - alpha / 2, df)
  def tails(v):
    threshold = critical * math.sqrt(v / df)
    normal_tails = stats.norm.cdf(nc - threshold) + stats.norm.cdf(-nc - threshold)
    return normal_tails * stats.chi2.pdf(v, df)
  return float(integrate.quad(tails, 0, np.inf, limit=200)[0])


def minimum_detectable_difference(per_seed, power: float = 0.8) -> float:
  """The smallest true mean difference that a paired two-sided t-test at 5% detects
  with probability `power`, given the spread of these per-seed differences (solved
  exactly on the noncentral t: `t_test_power`), in their units; nan for n < 2, 0 for
  differences without spread."""
  x = np.asarray(per_seed, np.float64)
  if x.size < 2:
    return float("nan")
  sd, n = float(x.std(ddof=1)), x.size
  if sd == 0:
    return 0.0
  high = sd  # power grows with the difference: double until it brackets the target
  while not t_test_power(high, sd, n) >= power:
    high *= 2
  return float(optimize.brentq(lambda d: t_test_power(d, sd, n) - power, 0.0, high,
                               xtol=1e-10 * sd))


def paired_differences(s: dict) -> dict:
  """{name: {"per_seed", "mean", "ci95", "mdd80"}}: a - b per seed in points, mean,
  the half-width of its 95% t-interval and the minimum difference detectable at 80%
  power from that spread (None for one seed), from summary `s`."""
  out = {}
  finite = lambda v: round(v, 2) if math.isfinite(v) else None
  for name, a, b in _comparisons(s):
    diff = [round(x - y, 2) for x, y in zip(a, b)]
    mean, half = tables.mean_ci95(diff)
    out[name] = {"per_seed": diff, "mean": round(mean, 2), "ci95": finite(half),
                 "mdd80": finite(minimum_detectable_difference(diff))}
  return out


def paired_table(paired: dict, stem: str) -> str:
  """The summary's paired differences as a table: which orderings hold beyond noise."""
  rows = []
  for name, d in paired.items():
    half = float("nan") if d["ci95"] is None else d["ci95"]  # nan compares False below
    sign = ("a > b" if d["mean"] - half > 0 else "a < b" if d["mean"] + half < 0
            else "not separated")
    rows.append({"comparison (a - b)": name,
                 "per seed": ", ".join(f"{x:+.1f}" for x in d["per_seed"]),
                 "mean ± 95% CI": tables.fmt(d["mean"], half, scale=1.0),
                 "beyond noise": sign,
                 "MDD (80%)": "-" if d.get("mdd80") is None else f"{d['mdd80']:.1f}"})
  notes = ["Paired per-seed differences in points (avg@k in %, each arm's table split), mean "
           "± half-width of the 95% t-interval over the comparison's seeds; 'beyond noise' "
           "when the interval excludes 0. MDD (80%): the smallest true difference a paired "
           "t-test at 5% would detect 4 times in 5, given this spread and number of seeds."]
  return tables.write_table(rows, list(rows[0]) if rows else ["comparison (a - b)"], stem,
                            title="Paired differences", notes=notes)["md"]


def problem_difference(before, after, *, resamples: int = 10000, seed: int = 0) -> dict:
  """after - before over the same problems, in points (accuracy in %).

  Args:
    before, after: [E] per-problem accuracies in [0, 1] (0/1 greedy verdicts, or
      c / k of k samples), problem i the same in both.
    resamples: bootstrap resamples of the problems.
  Returns:
    {"mean", "ci_low", "ci_high"}: the mean difference and its 95% percentile
    bootstrap interval over problems; with 0/1 inputs also "improved", "regressed"
    (problems that flipped each way) and "mcnemar_p", the exact two-sided McNemar
    p-value (a binomial test of the flips).
  """
  before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
  if before.shape != after.shape or before.ndim != 1 or not before.size:
    raise ValueError(f"expected two [E] arrays over the same problems, got {before.shape} "
                     f"and {after.shape}")
  diff = (after - before) * 100
  rng = np.random.default_rng(seed)
  means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
  out = {"mean": float(diff.mean()), "ci_low": float(np.percentile(means, 2.5)),
         "ci_high": float(np.percentile(means, 97.5))}
  if np.isin(before, (0, 1)).all() and np.isin(after, (0, 1)).all():
    improved, regressed = int(((after == 1) & (before == 0)).sum()), int(
        ((after == 0) & (before == 1)).sum())
    flips = improved + regressed
    out.update(improved=improved, regressed=regressed, mcnemar_p=float(
        stats.binomtest(improved, flips, 0.5).pvalue) if flips else 1.0)
  return out
