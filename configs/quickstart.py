"""The README's first command: `python -m experiments.quickstart --workdir=DIR`.

Presets: default (the embedded default), micro (CI-sized).
Until the recipe stages land, the quickstart runs the generic loop end to end.
"""
import ml_collections

from configs import default


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in ("default", "micro"):
    raise ValueError(f"unknown preset {preset!r} for configs/quickstart.py "
                     "(choose default or micro)")
  config = default.get_config("tiny" if preset == "default" else "toy")
  config.preset = preset
  return config
