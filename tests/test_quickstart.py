"""The README's first command on the micro preset: tables and plots written and well-formed."""
import csv
import os

import matplotlib.image

from tests.helpers import run_module


def test_quickstart_micro_writes_tables_and_plots_and_reuses_stages(tmp_path):
  workdir = str(tmp_path / "qs")
  args = [f"--workdir={workdir}", "--config=configs/quickstart.py:micro",
          "--config.log.progress=False", "--config.log.tensorboard=False",
          "--config.verifier.num_workers=1"]
  first = run_module("experiments.quickstart", *args)
  assert "SFT -> GRPO slice" in first.stdout
  for ext in ("md", "csv", "tex"):
    assert os.path.getsize(os.path.join(workdir, "tables", f"slice.{ext}")) > 0
  rows = list(csv.DictReader(open(os.path.join(workdir, "tables", "slice.csv"))))
  assert [r["arm"] for r in rows] == ["SFT cold start", "SFT + GRPO", "GRPO - SFT (paired)"]
  for r in rows[:2]:
    assert 0.0 <= float(r["avg@2"]) <= 100.0
  image = matplotlib.image.imread(os.path.join(workdir, "plots", "grpo_curves.png"))
  assert image.shape[0] > 100
  second = run_module("experiments.quickstart", *args)
  assert "== sft" not in second.stdout and "== grpo" not in second.stdout  # all stages reused
