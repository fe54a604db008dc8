"""Optimizer from the config's `optim` block: AdamW, warmup + constant/cosine, clipping."""
import ml_collections
import optax


SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(optim: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
  """Linear warmup over `warmup_steps`, then constant or cosine decay to 0 at `steps`."""
  warmup = optim.warmup_steps
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, optim.learning_rate, warmup, max(steps, warmup + 1))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, optim.learning_rate, max(warmup, 1)),
       optax.constant_schedule(optim.learning_rate)], [warmup])


def make_optimizer(optim: ml_collections.ConfigDict, steps: int
                   ) -> optax.GradientTransformation:
  """Global-norm clipping (0 disables) followed by AdamW."""
  lr = learning_rate_schedule(optim, steps)
  parts = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm else []
  parts.append(optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                           weight_decay=optim.weight_decay))
  return optax.chain(*parts)
