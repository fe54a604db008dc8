"""Generic single-stage config: `--config=configs/default.py:tiny`.

Presets:
  toy:   a linear-regression stage that exercises the training loop,
         checkpointing and metrics with no model (fast; used by tests).
  tiny:  same loop, larger and longer.
"""
import ml_collections


def get_config(preset: str = "toy") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.seed = 0
  config.stage = "toy"

  config.train = ml_collections.ConfigDict()
  config.train.steps = 40
  config.train.batch_size = 16
  config.train.checkpoint_every = 5
  config.train.keep_checkpoints = 3
  config.train.log_every = 1

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 0.1
  config.optim.schedule = "cosine"  # constant | cosine
  config.optim.warmup_steps = 5
  config.optim.weight_decay = 0.0
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.grad_clip_norm = 1.0

  config.log = ml_collections.ConfigDict()
  config.log.progress = True
  config.log.tensorboard = True

  # Toy regression problem: y = x @ w_true + noise, x ~ N(0, 1)^dim.
  config.toy = ml_collections.ConfigDict()
  config.toy.dim = 8
  config.toy.noise = 0.1
  config.toy.step_sleep_s = 0.0  # slows the loop so tests can kill it mid-run

  if preset == "toy":
    pass
  elif preset == "tiny":
    config.train.steps = 200
    config.toy.dim = 64
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/default.py "
                     "(choose toy or tiny)")
  return config
