"""The README's first command: `python -m experiments.quickstart --workdir=DIR`.

Runs the vertical slice on the embedded default: SFT cold start of the tiny
student on synthetic math, evaluation, GRPO against the equivalence
verifier, evaluation again, over `num_seeds` seeds. Stage blocks (`sft`,
`grpo`) override the base config for their stage.

Presets: default (the embedded default, minutes on 2 CPU cores), micro (CI).
"""
import ml_collections

from configs import default


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in ("default", "micro"):
    raise ValueError(f"unknown preset {preset!r} for configs/quickstart.py "
                     "(choose default or micro)")
  config = default.get_config("micro" if preset == "micro" else "tiny")
  config.preset = preset
  config.stage = "quickstart"
  config.num_seeds = 1
  # SFT and GRPO draw disjoint halves of the train split.
  config.sft = ml_collections.ConfigDict(dict(
      steps=400, batch_size=32, learning_rate=3e-3, schedule="cosine", warmup_steps=30,
      split="train[:50%]"))
  config.grpo = ml_collections.ConfigDict(dict(
      steps=60, batch_size=16, learning_rate=1e-4, schedule="constant", warmup_steps=0,
      num_samples=8, split="train[50%:]"))
  if preset == "micro":
    config.sft.update(steps=4, batch_size=8)
    config.grpo.update(steps=2, batch_size=4, num_samples=4)
  return config
