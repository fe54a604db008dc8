r"""Generic single-stage runner.

  python -m experiments.train --config=configs/default.py:toy --workdir=/tmp/run \
      --config.train.steps=100 --config.optim.learning_rate=1e-2

Runs `config.stage`, resuming from the latest checkpoint in --workdir, and
writes the stage's summary to <workdir>/summary.json.
"""
import json
import sys

from absl import flags

from hybrid_rl import cli
from hybrid_rl.parallel import distributed
from hybrid_rl.train import metrics as metrics_lib
from hybrid_rl.train import stage_runs
from hybrid_rl.train import stages

_CONFIG = cli.define_config("configs/default.py:toy")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main(argv):
  del argv
  config = cli.resolved_config(_CONFIG)
  try:
    stage = stages.get(config.stage)
  except ValueError as e:
    sys.exit(f"FATAL invalid config: {e}")
  if config.stage not in ("eval", "toy") and config.train.steps == 0:
    sys.exit(f"FATAL invalid config: config.train.steps=0: a {config.stage} stage of no steps "
             "would export its starting weights as trained; set train.steps > 0 "
             "(--config.stage=eval evaluates a checkpoint)")
  cli.claim_workdir(_WORKDIR.value)
  # Before anything is written: a workdir holding another run is refused, not overwritten.
  stage_runs.check_reusable(config, _WORKDIR.value)
  cli.write_config(config, _WORKDIR.value)
  stage_runs.record_start(config, _WORKDIR.value)
  summary = stage(config, _WORKDIR.value)
  stage_runs.write_summary(_WORKDIR.value, summary)
  if distributed.is_main():
    print(f"summary: {json.dumps(metrics_lib.json_safe(summary))}", flush=True)


if __name__ == "__main__":
  cli.run(main)
