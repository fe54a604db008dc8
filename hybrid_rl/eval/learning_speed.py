"""Learning speed of RL stages: curves averaged over seeds, and where a curve first
reaches a target accuracy (in steps, samples generated and seconds).

Reinforce-Ada's second claim is that it learns faster than GRPO; compared per step,
per sample generated and per second, since an Ada step generates more samples.
"""
from typing import Mapping, Sequence

import numpy as np

EVAL_KEY = "eval/avg@k"


def with_totals(rows: Sequence[Mapping]) -> list[dict]:
  """Metric rows of one stage with "seconds_total": cumulative rollout + update
  seconds over every step (the first step's compilation included, as every arm pays
  it). The stage logs that total itself, counted at every step; rows written before it
  did are summed here, which is exact only when every step was logged."""
  total, out = 0.0, []
  for row in rows:
    total += row.get("seconds_rollout_and_update", 0.0)
    out.append({"seconds_total": total, **row})
  return out


def mean_curve(runs: Sequence[Sequence[Mapping]], keys: Sequence[str]) -> list[dict]:
  """The seeds' curves averaged step by step.

  Args:
    runs: per seed, the metric rows of one RL stage ({"step": int, key: float, ...}).
    keys: metrics to average; a step enters a key's curve only where every seed has
      it (validation runs every eval.every steps).
  Returns:
    rows by step: {"step", key: mean over seeds, ...} with the keys all seeds logged.
  """
  by_step = [{r["step"]: r for r in rows} for rows in runs]
  steps = sorted(set.intersection(*(set(s) for s in by_step))) if by_step else []
  out = []
  for step in steps:
    row = {"step": step}
    for key in keys:
      values = [s[step].get(key) for s in by_step]
      if all(v is not None for v in values):
        row[key] = float(np.mean(values))
    out.append(row)
  return out


def first_reach(curve: Sequence[Mapping], target: float, key: str = EVAL_KEY
                ) -> Mapping | None:
  """The first row of `curve` whose `key` is >= target (None: never reached)."""
  for row in curve:
    if key in row and row[key] >= target - 1e-9:
      return row
  return None


def final_value(rows: Sequence[Mapping], key: str = EVAL_KEY) -> float:
  """The last logged value of `key` (nan if none)."""
  values = [r[key] for r in rows if r.get(key) is not None]
  return float(values[-1]) if values else float("nan")
