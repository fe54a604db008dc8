"""Mean +- 95% CI and the three table formats."""
import csv

import numpy as np
import pytest
from scipy import stats

from hybrid_rl.eval import tables


def test_mean_ci95_matches_t_interval():
  x = [0.2, 0.25, 0.3, 0.22]
  mean, half = tables.mean_ci95(x)
  lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
  assert mean == pytest.approx(np.mean(x))
  assert half == pytest.approx((hi - lo) / 2)
  assert np.isnan(tables.mean_ci95([0.5])[1])
  assert tables.fmt(*tables.mean_ci95([0.5])) == "50.0"
  assert tables.fmt(0.123, 0.01) == "12.3 ± 1.0"


def test_write_table_formats(tmp_path):
  rows = [{"arm": "GRPO", "acc": "12.0 ± 1.0"}, {"arm": "Ada_Balance", "acc": "15.5 ± 2.0"}]
  out = tables.write_table(rows, ["arm", "acc"], str(tmp_path / "t" / "main"), title="T",
                           notes=["setup: tiny"])
  md = open(out["md_path"]).read()
  assert md.startswith("### T") and "| Ada_Balance | 15.5 ± 2.0 |" in md and "setup: tiny" in md
  assert list(csv.DictReader(open(out["csv_path"]))) == rows
  tex = open(out["tex_path"]).read()
  assert r"Ada\_Balance & 15.5 $\pm$ 2.0 \\" in tex and r"\begin{tabular}{ll}" in tex
