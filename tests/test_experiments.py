"""Experiment scripts on micro presets: their tables and plots are written and well-formed."""
import csv
import os

import matplotlib.image

from tests.helpers import run_module

COMMON = ["--config.log.progress=False", "--config.log.tensorboard=False",
          "--config.verifier.num_workers=1"]


def test_reinforce_ada_micro_writes_table_with_cost_columns_and_curves(tmp_path):
  workdir = str(tmp_path / "ada")
  proc = run_module("experiments.reinforce_ada", f"--workdir={workdir}",
                    "--config=configs/reinforce_ada.py:micro", *COMMON)
  assert "Reinforce-Ada vs GRPO" in proc.stdout
  rows = list(csv.DictReader(open(os.path.join(workdir, "tables", "reinforce_ada.csv"))))
  assert [r["method"] for r in rows] == ["GRPO (n)", "Reinforce-Ada-Pos", "Reinforce-Ada-Balance"]
  grpo, ada_pos, ada_bal = (float(r["samples/step"]) for r in rows)
  assert grpo == 4 * 2  # prompts x n
  assert ada_pos >= 4 * 4 and ada_bal >= 4 * 4  # at least one round of M per prompt
  for r in rows:
    assert float(r["s/step"]) > 0 and r["paper avg@32"]
  for name in ("reinforce_ada_step.png", "reinforce_ada_samples.png"):
    assert matplotlib.image.imread(os.path.join(workdir, "plots", name)).shape[0] > 100
  assert os.path.exists(os.path.join(workdir, "tables", "reinforce_ada.tex"))
