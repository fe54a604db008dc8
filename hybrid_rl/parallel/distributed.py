"""Multi-process JAX: start-up, the global mesh, and moving rows between hosts and it.

One process per host (TPU VM worker or GPU node). Every process runs the same
program; each reads its own shard of prompts, and jitted computations see
global arrays sharded over a mesh of all devices. Host-side work (decoding,
verifier calls, Reinforce-Ada rounds) stays on the process's own rows:

  local rows [b, ...] --global_rows--> global [b * process_count, ...]
  global [B, ...]     --local_rows---> this process's rows [B / process_count, ...]

local_rows inverts global_rows. On meshes whose devices are listed in process
order (CPU, GPU nodes) process p holds global rows [p * b, (p + 1) * b), so the
global batch is the per-process batches concatenated, as one process would
have drawn it.
"""
import gc
import json
import os
from typing import Any, Mapping

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from hybrid_rl.parallel import sharding

PyTree = Any


def _on_tpu_pod() -> bool:
  # Set on every worker of a multi-host TPU VM; jax.distributed reads the rest.
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(cfg: ml_collections.ConfigDict) -> None:
  """Starts jax.distributed when the run spans several processes.

  cfg: config.distributed with coordinator_address ("host:port"), num_processes
  and process_id (-1: from $JAX_PROCESS_ID). Empty / 0 fields fall back to the
  environment ($JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES); on a multi-host
  TPU VM everything is discovered automatically. Must run before any other
  JAX call. A single process does nothing.
  """
  if jax.distributed.is_initialized():
    return
  address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
  pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
  if address and num > 1:
    if pid < 0:
      raise ValueError("several processes need a process id: set config.distributed.process_id "
                       "or $JAX_PROCESS_ID")
    if os.environ.get("JAX_PLATFORMS", "") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, num_processes=num, process_id=pid,
                               initialization_timeout=cfg.timeout_s)
  elif num > 1 or address:
    raise ValueError(f"config.distributed: coordinator_address={address!r} with num_processes="
                     f"{num}: multi-process runs need both")
  elif _on_tpu_pod():
    jax.distributed.initialize()


def is_main() -> bool:
  """Whether this process writes metrics, tables and exported files."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """All processes wait here (a no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def main_process_first(fn, name: str):
  """Runs fn on the main process, then on the others (which find its files, e.g.
  a prepared dataset or a trained tokenizer, and load them)."""
  if is_main():
    out = fn()
    barrier(name)
    return out
  barrier(name)
  return fn()


def make_mesh(shape) -> Mesh:
  """The global (data, fsdp, tensor) mesh over every process's devices."""
  return sharding.make_mesh(tuple(shape))


def rows_sharding(mesh: Mesh) -> NamedSharding:
  """Leading dimension split over the batch axes; trailing dimensions replicated."""
  return NamedSharding(mesh, P(sharding.BATCH))


def global_rows(mesh: Mesh, local: Any) -> jax.Array:
  """This process's rows [b, ...] -> a global array [b * process_count, ...] split by rows."""
  local = np.asarray(local)
  return jax.make_array_from_process_local_data(rows_sharding(mesh), local)


def local_rows(mesh: Mesh, x: jax.Array) -> np.ndarray:
  """A global array [B, ...] -> this process's row block [B / process_count, ...] on the host."""
  if jax.process_count() == 1:
    return np.asarray(x)
  x = jax.jit(lambda a: a, out_shardings=rows_sharding(mesh))(x)
  return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, P(sharding.BATCH)))


def put_global(tree: PyTree, shardings: PyTree) -> PyTree:
  """Host values (identical on every process) -> global arrays with the given shardings.
  Global arrays already placed (a checkpoint loaded onto the mesh) are resharded where
  their sharding differs, never gathered to a host."""
  def one(value, sh):
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
      return value if value.sharding.is_equivalent_to(sh, value.ndim) else jax.device_put(value, sh)
    if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sh, value.ndim):
      return value
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sh, lambda index: value[index])
  return jax.tree.map(one, tree, shardings)


def process_mesh(mesh: Mesh, process: int) -> Mesh:
  """Process `process`'s devices of `mesh` as a (1, n, 1) mesh: fsdp over them."""
  return sharding.make_mesh((1, -1, 1),
                            [d for d in mesh.devices.flat if d.process_index == process])


def local_replica(params: PyTree, mesh: Mesh) -> tuple[PyTree, Mesh]:
  """A whole copy of the global `params` on this process's devices, split over them by
  the partition rules (fsdp), for host-side loops that run per process (the continuous
  engine's scheduler, Reinforce-Ada's rounds): (params, the process's mesh).

  Device to device, never through host memory: one reshard onto a mesh whose data axis
  is the processes and whose fsdp axis is each process's devices (the parameters are
  replicated over data), after which a process's shards are exactly its local mesh's.
  Every process must call it (the reshard is a collective).
  """
  processes = sorted({d.process_index for d in mesh.devices.flat})
  meshes = {p: process_mesh(mesh, p) for p in processes}
  grid = np.stack([meshes[p].devices.reshape(-1) for p in processes])[..., None]
  replicas = jax.device_put(params, sharding.param_shardings(params, sharding.grid_mesh(grid)))
  local_mesh = meshes[jax.process_index()]

  def to_local(x: jax.Array, local: NamedSharding) -> jax.Array:
    shards = {s.device: s.data for s in x.addressable_shards}
    return jax.make_array_from_single_device_arrays(
        x.shape, local, [shards[d] for d in local_mesh.devices.flat])

  return (jax.tree.map(to_local, replicas, sharding.param_shardings(params, local_mesh)),
          local_mesh)


def host_copy(tree: PyTree) -> PyTree:
  """Global arrays -> full NumPy values on every process (all-gather over hosts)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def device_bytes(device=None) -> int:
  """Bytes of every live array's shards on `device` (default: this process's first):
  what a stage really holds there, beside XLA's own buffers."""
  gc.collect()  # arrays kept only by reference cycles (merged modules) are not held
  device = device or jax.local_devices()[0]
  # A global array's shards are live arrays too, on the same buffers: count each once.
  buffers = {s.data.unsafe_buffer_pointer(): s.data.nbytes for a in jax.live_arrays()
             for s in a.addressable_shards if s.device == device}
  return int(sum(buffers.values()))


def gather_objects(value: Any) -> list:
  """A JSON-able host value of every process, in process order (one all-gather of
  lengths, one of the padded UTF-8 bytes)."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32)))
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:data.size] = data
  every = np.asarray(multihost_utils.process_allgather(padded))
  return [json.loads(bytes(every[i, :int(lengths[i, 0])]).decode())
          for i in range(every.shape[0])]


def sum_over_processes(values: Any) -> np.ndarray:
  """Element-wise sum of a host value over processes (counts for metrics)."""
  values = np.asarray(values, np.float64)
  if jax.process_count() == 1:
    return values
  return np.asarray(multihost_utils.process_allgather(values)).sum(0)


def reduce_host_values(means: Mapping[str, Any], sums: Mapping[str, Any]) -> dict[str, float]:
  """Step metrics of host values in one all-gather: for `means`, the mean over every
  process's elements (a scalar counts as one element); for `sums`, the total."""
  local = [x for v in means.values() for x in (np.sum(v), np.size(v))]
  local += [np.sum(v) for v in sums.values()]
  total = sum_over_processes(local)
  out = {k: float(total[2 * i] / max(total[2 * i + 1], 1)) for i, k in enumerate(means)}
  out.update({k: float(total[2 * len(means) + i]) for i, k in enumerate(sums)})
  return out


def put_replicated(mesh: Mesh, scalars: Mapping[str, float]) -> dict[str, jax.Array]:
  """Host scalars (identical on every process) -> replicated float32 global arrays."""
  replicated = NamedSharding(mesh, P())
  return put_global({k: np.float32(v) for k, v in scalars.items()},
                    {k: replicated for k in scalars})
