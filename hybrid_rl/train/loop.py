"""The resumable step loop every stage runs: restore, step, log, checkpoint.

A stage supplies an initial state pytree and a host-side `step_fn(state, step)
-> (state, scalars)`; the step function may sample, call verifiers and run
jitted updates. Everything needed to continue exactly (params, optimizer
state, RNG key, data position, running statistics) must live in the state, so
that a run killed at any point and restarted from its workdir ends with the
same parameters as an uninterrupted run.

A step whose update was skipped as non-finite (the step function's
`nonfinite_skipped` scalar > 0, see steps.make_train_step) is counted; after
`max_consecutive_skips` such steps in a row the run stops with
TrainingDiverged, keeping the checkpoints it wrote, instead of running on and
exporting weights that never trained.
"""
import os
import time
from typing import Any, Callable, Mapping

import jax

from hybrid_rl.train import checkpoints
from hybrid_rl.train import metrics as metrics_lib

PyTree = Any
StepFn = Callable[[PyTree, int], tuple[PyTree, Mapping[str, Any]]]


_position = ""  # where the running stage is, for the line a stopped run prints


def position() -> str:
  """Where the loop running in this process is ("sft step 37 of 600 in DIR, last
  checkpoint step 30"), or "" outside one."""
  return _position


class TrainingDiverged(RuntimeError):
  """Too many consecutive steps had non-finite losses, gradients or parameters."""


def options(config) -> dict:
  """run()'s keyword arguments from a stage config (train.* and log.*)."""
  t = config.train
  return dict(steps=t.steps, checkpoint_every=t.checkpoint_every,
              keep_checkpoints=t.keep_checkpoints, log_every=t.log_every,
              max_consecutive_skips=t.max_consecutive_skips, progress=config.log.progress,
              tensorboard=config.log.tensorboard)


def run(workdir: str, *, init_state: PyTree, step_fn: StepFn, steps: int,
        checkpoint_every: int, keep_checkpoints: int, log_every: int = 1,
        progress: bool = True, tensorboard: bool = True, desc: str = "train",
        postfix_keys: tuple[str, ...] = ("loss",), max_consecutive_skips: int = 0
        ) -> tuple[PyTree, dict]:
  """Runs steps 1..`steps`, resuming from the latest checkpoint in `workdir`.

  Step k's checkpoint holds the state after k steps. Returns (state, info):
  info["steps_run"] in this call (0 for a finished stage), info["skipped_steps"]
  over the whole run (steps with a non-finite update skipped).
  max_consecutive_skips: stop after that many skipped steps in a row (0: never).
  """
  global _position
  for name in ("checkpoints", "corrupt_checkpoints"):
    checkpoints.check_directory(os.path.join(workdir, name))
  if jax.process_index() == 0:
    checkpoints.remove_unfinished(os.path.join(workdir, "checkpoints"))
  manager = checkpoints.make_manager(
      os.path.join(workdir, "checkpoints"),
      save_every=checkpoint_every, keep=keep_checkpoints)
  try:
    restored = checkpoints.restore_latest(manager, init_state)
  except BaseException:
    manager.close()  # its background threads would otherwise keep the process alive
    raise
  start, state, meta = 0, init_state, {}
  if restored is not None:
    start, state, meta = restored
    print(f"[{desc}] resumed from step {start} in {workdir}", flush=True)
  skipped, in_a_row = int(meta.get("skipped_steps", 0)), 0
  if start >= steps:
    manager.close()
    return state, {"steps_run": 0, "skipped_steps": skipped}

  # Every process checkpoints (orbax writes each one's shards); only the main one logs.
  main = jax.process_index() == 0
  writer = (metrics_lib.MetricsWriter(workdir, tensorboard=tensorboard, resume_step=start)
            if main else None)
  bar = metrics_lib.progress(total=steps, initial=start, desc=desc,
                             enabled=progress and main)
  try:
    saved_step = start
    for step in range(start + 1, steps + 1):
      _position = (f"{desc} step {step} of {steps} in {workdir}, last checkpoint "
                   + (f"step {saved_step}" if saved_step else "none"))
      t0 = time.perf_counter()
      state, scalars = step_fn(state, step)
      if float(scalars.get("nonfinite_skipped", 0.0)) > 0:
        skipped, in_a_row = skipped + 1, in_a_row + 1
      else:
        in_a_row = 0
      if max_consecutive_skips and in_a_row >= max_consecutive_skips:
        raise TrainingDiverged(
            f"{desc}: {in_a_row} consecutive steps (up to step {step}) had a non-finite loss, "
            f"gradient or update and were skipped; stopped (train.max_consecutive_skips="
            f"{max_consecutive_skips}). Checkpoints up to the last good one are kept in "
            f"{workdir}; lower optim.learning_rate or check the data.")
      if step % log_every == 0 or step == steps:
        scalars = dict(jax.device_get(scalars))
        scalars.setdefault("seconds_per_step", time.perf_counter() - t0)
        if writer is not None:
          row = writer.write(step, scalars)
          bar.set_postfix(metrics_lib.short_summary(row, postfix_keys))
      checkpoints.save(manager, step, state, {"step": step, "skipped_steps": skipped},
                       force=step == steps)
      if step % checkpoint_every == 0 or step == steps:
        saved_step = step
      bar.update(1)
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()
    if writer is not None:
      writer.close()
  _position = ""
  return state, {"steps_run": steps - start, "skipped_steps": skipped}
