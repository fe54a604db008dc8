"""The resumable step loop every stage runs: restore, step, log, checkpoint.

A stage supplies an initial state pytree and a host-side `step_fn(state, step)
-> (state, scalars)`; the step function may sample, call verifiers and run
jitted updates. Everything needed to continue exactly (params, optimizer
state, RNG key, data position, running statistics) must live in the state, so
that a run killed at any point and restarted from its workdir ends with the
same parameters as an uninterrupted run.
"""
import os
import time
from typing import Any, Callable, Mapping

import jax

from hybrid_rl.train import checkpoints
from hybrid_rl.train import metrics as metrics_lib

PyTree = Any
StepFn = Callable[[PyTree, int], tuple[PyTree, Mapping[str, Any]]]


def run(workdir: str, *, init_state: PyTree, step_fn: StepFn, steps: int,
        checkpoint_every: int, keep_checkpoints: int, log_every: int = 1,
        progress: bool = True, tensorboard: bool = True, desc: str = "train",
        postfix_keys: tuple[str, ...] = ("loss",)) -> tuple[PyTree, int]:
  """Runs steps 1..`steps`, resuming from the latest checkpoint in `workdir`.

  Step k's checkpoint holds the state after k steps. Returns (state, number of
  steps run in this call); a finished stage returns at once with 0.
  """
  manager = checkpoints.make_manager(
      os.path.join(workdir, "checkpoints"),
      save_every=checkpoint_every, keep=keep_checkpoints)
  restored = checkpoints.restore_latest(manager, init_state)
  start, state = 0, init_state
  if restored is not None:
    start, state, _ = restored
    print(f"[{desc}] resumed from step {start} in {workdir}", flush=True)
  if start >= steps:
    manager.close()
    return state, 0

  # Every process checkpoints (orbax writes each one's shards); only the main one logs.
  main = jax.process_index() == 0
  writer = (metrics_lib.MetricsWriter(workdir, tensorboard=tensorboard, resume_step=start)
            if main else None)
  bar = metrics_lib.progress(total=steps, initial=start, desc=desc,
                             enabled=progress and main)
  try:
    for step in range(start + 1, steps + 1):
      t0 = time.perf_counter()
      state, scalars = step_fn(state, step)
      if step % log_every == 0 or step == steps:
        scalars = dict(jax.device_get(scalars))
        scalars.setdefault("seconds_per_step", time.perf_counter() - t0)
        if writer is not None:
          row = writer.write(step, scalars)
          bar.set_postfix(metrics_lib.short_summary(row, postfix_keys))
      checkpoints.save(manager, step, state, {"step": step}, force=step == steps)
      bar.update(1)
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()
    if writer is not None:
      writer.close()
  return state, steps - start
