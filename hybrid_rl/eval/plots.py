"""Learning curves (rows of metrics.jsonl, train/metrics.read_metrics) to PNG."""
import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


# Axis labels with units for the metrics the experiments plot.
AXIS_LABELS = {
    "step": "step (optimizer updates)",
    "samples_total": "responses sampled (cumulative)",
    "reward_mean": "train reward (mean per response)",
    "accuracy": "train accuracy (fraction verified correct)",
    "loss": "loss (nats per token)",
    "reverse_kl": "reverse KL to the teacher (nats per token)",
    "eval/avg@k": "validation avg@k (fraction correct)",
}


def plot_learning_curves(runs: Mapping[str, Sequence[Mapping]], keys: Sequence[str],
                         out_png: str, *, x_key: str = "step",
                         title: str = "") -> str:
  """Draws one panel per metric key, one line per run, a marker on every point.

  Args:
    runs: run label -> its metric rows ({"step": int, name: float}).
    keys: metric names to plot (rows without a key are skipped for it).
    out_png: output path; parent directories are created.
    x_key: the x axis, "step" or any cumulative metric (e.g. samples seen).
  Returns:
    out_png.
  """
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4),
                           squeeze=False)
  for ax, key in zip(axes[0], keys):
    for label, run_rows in runs.items():
      rows = [r for r in run_rows if key in r and x_key in r]
      if rows:
        ax.plot([r[x_key] for r in rows], [r[key] for r in rows], label=label,
                marker="o", markersize=3)
    ax.set_xlabel(AXIS_LABELS.get(x_key, x_key))
    ax.set_ylabel(AXIS_LABELS.get(key, key))
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  fig.savefig(out_png, dpi=110)
  plt.close(fig)
  return out_png

