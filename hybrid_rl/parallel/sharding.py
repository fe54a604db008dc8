"""Device mesh and partition rules: params, KV cache, activations, batches.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with parameters
and optimizer state sharded over it) and `tensor` (Megatron-style: attention
heads and MLP width split). Batches split over (data, fsdp).

Rules map a parameter's path to a PartitionSpec. A dimension whose size does
not divide by its mesh axes is left replicated on that axis instead of
failing, so the same rules serve a 1M-parameter test model and an 8B model.
"""
import re
from typing import Any, Sequence

import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")

ACTIVATION_SPEC = P(BATCH, None, None)  # residual stream [B, T, H]
CACHE_SPEC = P(BATCH, "tensor", None, None)  # one layer's KV cache [B, K, S, D]

# (regex on the "/"-joined path, spec). First match wins. Paths end with the
# parameter's name, also inside optimizer states ("opt_state/0/mu/layers/q").
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r"(^|/)embed$", P("tensor", "fsdp")),  # [V, H]
    (r"(^|/)lm_head$", P("fsdp", "tensor")),  # [H, V]
    (r"(^|/)score$", P("fsdp", None)),  # [H, labels]
    (r"layers/(q|k|v|gate|up)$", P(None, "fsdp", "tensor")),  # [L, H, out]
    (r"layers/(o|down)$", P(None, "tensor", "fsdp")),  # [L, in, H]
    (r"layers/(q|k|v)_bias$", P(None, "tensor")),  # [L, out]
    (r".*", P()),  # norms and anything else: replicated
)


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
  """Mesh of shape (data, fsdp, tensor); a -1 entry takes the remaining devices."""
  devices = jax.devices() if devices is None else devices
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  if -1 in shape:
    rest = int(np.prod([s for s in shape if s != -1]))
    shape[shape.index(-1)] = len(devices) // rest
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, "
                     f"found {len(devices)}")
  try:
    return jax.make_mesh(tuple(shape), AXES, devices=devices, axis_types=AXIS_TYPES)
  except NotImplementedError:
    # A TPU torus whose axes the mesh's do not factor into (fsdp 8 on v5p-128's 4x4x4):
    # an axis may then span part of a physical one (found by experiments/compile_pod).
    return grid_mesh(
        mesh_utils.create_device_mesh(tuple(shape), devices, allow_split_physical_axes=True))


# Auto axes: XLA's sharding propagation places intermediates; explicit constraints sit
# only at the residual stream and the KV cache.
AXIS_TYPES = (jax.sharding.AxisType.Auto,) * len(AXES)


def grid_mesh(grid: np.ndarray) -> Mesh:
  """A (data, fsdp, tensor) mesh over devices already arranged: grid [data, fsdp, tensor]."""
  return Mesh(grid, AXES, axis_types=AXIS_TYPES)


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide evenly."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      fitted.append(None)
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    kept = tuple(a for a in names if a in mesh.shape)
    while kept and dim % int(np.prod([mesh.shape[a] for a in kept])):
      kept = kept[:-1]
    fitted.append(kept if len(kept) > 1 else (kept[0] if kept else None))
  return P(*fitted)


def _path_string(path) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return "/".join(p for p in parts if p not in ("value", "raw_value"))


def param_spec(path: str) -> P:
  for pattern, spec in PARAM_RULES:
    if re.search(pattern, path):
      return spec
  return P()


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """NamedSharding for every leaf of a parameter pytree (an nnx.State works).

  Also serves whole train states: optimizer moments follow their parameter,
  scalars (step counts, RNG keys) are replicated.
  """
  def one(path, leaf):
    spec = param_spec(_path_string(path))
    return NamedSharding(mesh, fit_spec(spec, np.shape(leaf), mesh))
  return jax.tree_util.tree_map_with_path(one, params)


def batch_sharding(mesh: Mesh, ndim: int, batch_size: int | None = None) -> NamedSharding:
  """Leading (batch) dimension split over (data, fsdp); the rest replicated."""
  spec = P(BATCH, *([None] * (ndim - 1)))
  if batch_size is not None:
    spec = fit_spec(spec, (batch_size,) + (1,) * (ndim - 1), mesh)
  return NamedSharding(mesh, spec)


def decode_weights(layer_params: list[dict[str, jax.Array]], dtype) -> list[dict[str, jax.Array]]:
  """Per-layer weights ([in, out] each) in the compute dtype with their FSDP sharding
  undone (tensor sharding kept): a decode loop gathers them once, before it starts,
  instead of all-gathering every weight on every token."""
  return [{name: constrain(w.astype(dtype), decode_weight_spec(name)) for name, w in layer.items()}
          for layer in layer_params]


def decode_weight_spec(name: str) -> P:
  """The spec of one layer's weight `name` in decode_weights: its stacked spec without
  the layer axis and without fsdp."""
  spec = tuple(param_spec(f"layers/{name}"))[1:]
  return P(*[None if a == "fsdp" else a for a in spec])


def platform() -> str:
  """The platform code runs on: the active mesh's devices' (a TPU slice compiled ahead of
  time from a CPU host included), else the default backend's."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else getattr(mesh, "abstract_device", None)
  return device.platform if device is not None else jax.default_backend()


def batch_shards() -> int:
  """Devices the active mesh splits rows over (its BATCH axes); 1 without a mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh.empty else int(np.prod([mesh.shape.get(a, 1) for a in BATCH]))


def kernel_axes(rows: int, kv_heads: int) -> tuple | None:
  """How a Pallas kernel runs in `jax.shard_map` under the active mesh (Mosaic kernels are
  not partitioned automatically): (the axes `rows` split over, the BATCH axes where they
  divide it, else None; the axis KV heads split over, "tensor" where it divides them,
  else None). None without a mesh of several devices: the kernel runs as is."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or int(np.prod(list(mesh.shape.values()))) == 1:
    return None
  batch = tuple(a for a in BATCH if a in mesh.shape)
  row_axes = batch if rows % int(np.prod([mesh.shape[a] for a in batch])) == 0 else None
  return row_axes, "tensor" if kv_heads % mesh.shape.get("tensor", 1) == 0 else None


def constrain(x: jax.Array, spec: P) -> jax.Array:
  """with_sharding_constraint under an active mesh (jax.set_mesh); no-op otherwise."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not all(a in mesh.shape for a in AXES):
    return x
  return jax.lax.with_sharding_constraint(x, fit_spec(spec, x.shape, mesh))
