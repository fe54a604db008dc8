"""Orbax checkpoints of a whole train state, with resume and corrupt fallback.

A checkpoint holds one pytree (params, optimizer state, step, RNG key, data
position, running statistics: whatever the stage puts in its state) plus a
small JSON dict of host-side metadata. Orbax writes each step to a temporary
directory and renames it when complete, so a run killed mid-save leaves no
half-written step behind. Bytes damaged after the save need not make orbax
fail, so every save also records a checksum of each array (`fingerprints`,
computed on device, in the step's metadata) and a restore recomputes and
compares them (a step without checksums is damaged metadata: this code always
writes them). A step that fails to restore or to match is reported, moved
aside to `<workdir>/corrupt_checkpoints/`, and the previous step is used.

A checkpoint of another model (its arrays' shapes are not the state's, in every
step) is not damaged but incompatible: nothing is moved, and the run stops with
`UnusableCheckpointError`, as it does when `checkpoints/` or
`corrupt_checkpoints/` is not a directory.
"""
import collections
import os
import shutil
import sys
from typing import Any

from etils import epath
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

PyTree = Any


class UnusableCheckpointError(ValueError):
  """The checkpoint directory cannot serve this run (not a directory, or every step
  holds a state of other shapes); nothing was moved."""


def check_directory(path: str) -> None:
  """Raises unless `path` is a directory or absent (orbax would otherwise fail deep inside
  its async writer and leave the process hanging)."""
  if os.path.lexists(path) and not os.path.isdir(path):
    raise UnusableCheckpointError(f"{path} is not a directory; move it aside (it holds no "
                                  "checkpoint this code wrote) and run again")


def remove_unfinished(path: str) -> list[str]:
  """Deletes the temporary directories of saves that a killed run left unfinished
  (orbax's `*.orbax-checkpoint-tmp*`, never renamed to a step); returns their names."""
  if not os.path.isdir(path):
    return []
  names = sorted(n for n in os.listdir(path) if ".orbax-checkpoint-tmp" in n)
  for name in names:
    shutil.rmtree(os.path.join(path, name), ignore_errors=True)
  return names


def _drop_closed_loop_noise(previous):
  """After a failed restore, TensorStore completes the reads orbax started on an
  event loop that orbax has already closed; each completion reports an
  unraisable 'Event loop is closed' RuntimeError (dozens of tracebacks for one
  damaged step). They carry no information: the failure itself is reported."""
  def hook(unraisable):
    if (unraisable.exc_type is RuntimeError
        and str(unraisable.exc_value) == "Event loop is closed"):
      return
    previous(unraisable)
  return hook


sys.unraisablehook = _drop_closed_loop_noise(sys.unraisablehook)


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


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as a flat uint32 vector (typed PRNG keys by their key data)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).reshape(-1)
  size = x.dtype.itemsize
  if size < 4:
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)
  return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)


@jax.jit
def _fingerprint_leaves(leaves: list) -> jax.Array:
  """[n_leaves, 2] uint32: the sum of each array's words and their position-weighted
  sum, both mod 2^32 (any changed word changes the first; swapped words the second)."""
  out = []
  for x in leaves:
    w = _words(x)
    weights = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    out.append(jnp.stack([w.sum(dtype=jnp.uint32), (w * weights).sum(dtype=jnp.uint32)]))
  return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def fingerprints(tree: PyTree) -> dict[str, list[int]]:
  """{key path: [sum, weighted sum]} of every array in `tree` (JSON-ready)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  paths, leaves = [p for p, _ in flat], [x for _, x in flat]
  values = jax.device_get(_fingerprint_leaves(leaves))
  return {jax.tree_util.keystr(p): [int(a), int(b)] for p, (a, b) in zip(paths, values)}


def mismatched(tree: PyTree, expected: dict[str, list[int]]) -> list[str]:
  """Key paths of arrays in `tree` whose fingerprint differs from `expected`."""
  now = fingerprints(tree)
  return sorted(k for k, v in expected.items() if now.get(k) != list(v))


def save(manager: ocp.CheckpointManager, step: int, state: PyTree,
         meta: dict | None = None, *, force: bool = False) -> bool:
  """Saves `state` at `step` if the manager's interval says so (or `force`), with
  the arrays' fingerprints in the metadata."""
  if not (force or manager.should_save(step)):
    return False
  return manager.save(
      step,
      args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave({**(meta or {}), "checksums": fingerprints(state)}),
      ),
      force=force,
  )


def _abstract(tree: PyTree) -> PyTree:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _shapes(tree: PyTree) -> list[tuple[int, ...]]:
  """The sorted shapes of a state's arrays (typed PRNG keys by their key data), a
  signature that does not depend on how the tree's containers are named."""
  def shape(x):
    if jnp.issubdtype(getattr(x, "dtype", jnp.float32), jax.dtypes.prng_key):
      return tuple(jax.eval_shape(jax.random.key_data, x).shape)
    return tuple(jnp.shape(x))
  return sorted(shape(x) for x in jax.tree.leaves(tree))


def _saved_shapes(manager: ocp.CheckpointManager, step: int) -> list[tuple[int, ...]] | None:
  """The shapes a step's state was saved with (orbax's metadata, no arrays read), or None
  where the metadata cannot be read."""
  try:
    meta = ocp.StandardCheckpointHandler().metadata(
        epath.Path(str(manager.directory)) / str(step) / "state")
    return sorted(tuple(x.shape) for x in jax.tree.leaves(meta))
  except Exception:  # pylint: disable=broad-except
    return None


def _refuse_if_incompatible(manager: ocp.CheckpointManager, template: PyTree) -> None:
  """Raises UnusableCheckpointError when every step's metadata reads and none has the
  template's shapes: the directory holds another model's run, which is not damage."""
  steps = manager.all_steps()
  saved = [_saved_shapes(manager, s) for s in steps]
  want = _shapes(template)
  if not steps or any(s is None or s == want for s in saved):
    return
  extra = sorted((collections.Counter(saved[-1]) - collections.Counter(want)).elements())
  missing = sorted((collections.Counter(want) - collections.Counter(saved[-1])).elements())
  example = (f"arrays of shapes {extra[:2]} where this state has {missing[:2]}" if extra and missing
             else f"{len(saved[-1])} arrays where this state has {len(want)}")
  raise UnusableCheckpointError(
      f"{manager.directory} holds checkpoints (steps {', '.join(map(str, sorted(steps)))}) of "
      f"another model or stage ({example}); nothing was moved. Use a new --workdir, or move "
      "that directory aside to start over")


def restore_latest(manager: ocp.CheckpointManager, state_template: PyTree
                   ) -> tuple[int, PyTree, dict] | None:
  """Restores the newest readable step as (step, state, meta), or None.

  `state_template` is a pytree with the structure, shapes, dtypes and
  shardings of the state (a freshly initialised state works). Steps that fail
  to restore, or whose arrays do not match the checksums saved with them, are
  reported and moved aside, and older ones are tried. A directory whose every step has
  other shapes raises UnusableCheckpointError and moves nothing.
  """
  _refuse_if_incompatible(manager, state_template)
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(_abstract(state_template)),
              meta=ocp.args.JsonRestore(),
          ),
      )
      meta = dict(restored.meta or {})
      if "checksums" not in meta:
        raise ValueError("its metadata has no checksums (every checkpoint written here has)")
      bad = mismatched(restored.state, meta.pop("checksums"))
      if bad:
        raise ValueError(f"checksum mismatch in {', '.join(bad[:3])}"
                         + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))
    except Exception as e:  # pylint: disable=broad-except
      _quarantine(manager, step, e)
      continue
    return step, restored.state, meta
  return None


def _quarantine(manager: ocp.CheckpointManager, step: int, error: Exception):
  root = str(manager.directory)
  src = os.path.join(root, str(step))
  dst_dir = os.path.join(os.path.dirname(root), "corrupt_checkpoints")
  check_directory(dst_dir)
  os.makedirs(dst_dir, exist_ok=True)
  dst = os.path.join(dst_dir, f"{step}")
  if os.path.exists(dst):
    shutil.rmtree(dst)
  message = (f"checkpoint step {step} in {root} is unreadable "
             f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
             f"moved to {dst}, trying the previous one")
  print(f"WARNING {message}", flush=True)
  if os.path.exists(src):
    shutil.move(src, dst)
  manager.reload()
