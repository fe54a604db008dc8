r"""The main job on the embedded default: one command, no network.

  python -m experiments.quickstart --workdir=/tmp/hybrid_rl

Re-running with the same --workdir reuses every finished stage.
"""
import json
import os

from absl import flags

from hybrid_rl import cli
from hybrid_rl.eval import plots
from hybrid_rl.train import stages

_CONFIG = cli.define_config("configs/quickstart.py:default")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/hybrid_rl", "Output directory.")


def main(argv):
  del argv
  config = cli.resolved_config(_CONFIG)
  workdir = _WORKDIR.value
  cli.prepare_workdir(config, workdir)
  stage_dir = os.path.join(workdir, config.stage)
  summary = stages.get(config.stage)(config, stage_dir)
  png = plots.plot_learning_curves(
      {config.stage: os.path.join(stage_dir, "metrics.jsonl")}, ["loss"],
      os.path.join(workdir, "plots", f"{config.stage}_loss.png"))
  print(f"summary: {json.dumps(summary)}\nplot: {png}", flush=True)


if __name__ == "__main__":
  cli.run(main)
