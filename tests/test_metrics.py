"""metrics.jsonl + TensorBoard writing, resume truncation, and learning-curve plots."""
import glob
import json
import os

import matplotlib.image
import numpy as np

from hybrid_rl.eval import plots
from hybrid_rl.train import metrics as metrics_lib


def test_writer_writes_jsonl_and_tensorboard(tmp_path):
  with metrics_lib.MetricsWriter(str(tmp_path)) as writer:
    for step in range(1, 6):
      writer.write(step, {"loss": np.float32(1.0 / step), "acc": step / 10})
  rows = metrics_lib.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([r["loss"] for r in rows], [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5], rtol=1e-6)
  events = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert events and os.path.getsize(events[0]) > 0


def test_resume_drops_rows_past_restored_step_and_torn_lines(tmp_path):
  path = tmp_path / "metrics.jsonl"
  with open(path, "w") as f:
    for step in range(1, 8):
      f.write(json.dumps({"step": step, "loss": float(step)}) + "\n")
    f.write('{"step": 8, "lo')  # a writer killed mid-line
  assert len(metrics_lib.read_metrics(str(path))) == 7
  with metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False, resume_step=4) as writer:
    writer.write(5, {"loss": 50.0})
  rows = metrics_lib.read_metrics(str(path))
  assert [(r["step"], r["loss"]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 50)]


def test_non_finite_values_are_written_as_nan(tmp_path):
  with metrics_lib.MetricsWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write(1, {"loss": float("inf")})
  row = metrics_lib.read_metrics(str(tmp_path / "metrics.jsonl"))[0]
  assert np.isnan(row["loss"])


def test_plot_learning_curves_writes_png(tmp_path):
  runs = {}
  for name, scale in (("a", 1.0), ("b", 2.0)):
    with metrics_lib.MetricsWriter(str(tmp_path / name), tensorboard=False) as writer:
      for step in range(1, 11):
        writer.write(step, {"loss": scale / step, "samples": 8 * step})
    runs[name] = metrics_lib.read_metrics(str(tmp_path / name / "metrics.jsonl"))
  out = plots.plot_learning_curves(runs, ["loss"], str(tmp_path / "plots" / "curves.png"),
                                   x_key="samples")
  image = matplotlib.image.imread(out)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  assert image[..., :3].std() > 0  # not a blank canvas
