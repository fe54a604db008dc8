"""Stage name (config.stage) -> stage runner `run(config, workdir) -> summary dict`.

Stage modules are imported on first use so that `experiments.train` for one
stage does not pay for the imports of the others.
"""
import importlib
from typing import Callable

import ml_collections

_STAGE_MODULES = {
    "toy": "hybrid_rl.train.toy_stage",
    "sft": "hybrid_rl.train.sft_stage",
    "grpo": "hybrid_rl.train.grpo_stage",
    "eval": "hybrid_rl.train.eval_stage",
    "reward_model": "hybrid_rl.train.rm_stage",
    "distill": "hybrid_rl.train.distill_stage",
}


def names() -> list[str]:
  return sorted(_STAGE_MODULES)


def get(name: str) -> Callable[[ml_collections.ConfigDict, str], dict]:
  if name not in _STAGE_MODULES:
    raise ValueError(f"config.stage={name!r}: unknown stage (choose one of {', '.join(names())})")
  return importlib.import_module(_STAGE_MODULES[name]).run
