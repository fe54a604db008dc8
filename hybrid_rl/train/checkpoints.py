"""Orbax checkpoints of a whole train state, with resume and corrupt fallback.

A checkpoint holds one pytree (params, optimizer state, step, RNG key, data
position, running statistics: whatever the stage puts in its state) plus a
small JSON dict of host-side metadata. Orbax writes each step to a temporary
directory and renames it when complete, so a run killed mid-save leaves no
half-written step behind; a step that was completed but later damaged
(truncated file, bad bytes) fails to restore, is reported, moved aside to
`<dir>/corrupt/`, and the previous step is used instead.
"""
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

PyTree = Any


def make_manager(directory: str, *, save_every: int, keep: int,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """CheckpointManager saving every `save_every` steps and keeping `keep`."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every,
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      create=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: PyTree,
         meta: dict | None = None, *, force: bool = False) -> bool:
  """Saves `state` at `step` if the manager's interval says so (or `force`)."""
  return manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave(meta or {}),
      ),
      force=force,
  )


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_latest(manager: ocp.CheckpointManager, state_template: PyTree
                   ) -> tuple[int, PyTree, dict] | None:
  """Restores the newest readable step as (step, state, meta), or None.

  `state_template` is a pytree with the structure, shapes, dtypes and
  shardings of the state (a freshly initialised state works). Steps that fail
  to restore are reported and moved aside, and older ones are tried.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(_abstract(state_template)),
              meta=ocp.args.JsonRestore(),
          ),
      )
    except Exception as e:  # pylint: disable=broad-except
      _quarantine(manager, step, e)
      continue
    return step, restored.state, dict(restored.meta or {})
  return None


def _quarantine(manager: ocp.CheckpointManager, step: int, error: Exception):
  root = str(manager.directory)
  src = os.path.join(root, str(step))
  dst_dir = os.path.join(os.path.dirname(root), "corrupt_checkpoints")
  os.makedirs(dst_dir, exist_ok=True)
  dst = os.path.join(dst_dir, f"{step}")
  if os.path.exists(dst):
    shutil.rmtree(dst)
  message = (f"checkpoint step {step} in {root} is unreadable "
             f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
             f"moved to {dst}, trying the previous one")
  logging.warning(message)
  print(f"WARNING {message}", flush=True)
  if os.path.exists(src):
    shutil.move(src, dst)
  manager.reload()
