r"""Per-device memory plan of a config on its mesh: parameters, optimizer, KV cache.

  python -m experiments.memory_plan --config=configs/hero.py:pod

For each plan in config.plans (the models held together by one stage: the
policy, and where present teacher, student and reward model) it shapes the model abstractly (no weights, no
devices needed), shards each parameter by the partition rules of
hybrid_rl/parallel/sharding.py on config.parallel.mesh_shape, and adds:
  params     trained or frozen weights, in param_dtype (frozen: compute dtype);
  grads      one gradient per trained parameter (param_dtype);
  adam       two moments per trained parameter (float32);
  kv cache   sampler cache [L, rows, P + R, K, D] x 2 in compute dtype, rows =
             batch x samples / sampling.chunks split over (data, fsdp), heads
             over tensor;
  logits     float32 response logits [rows, R, V] of one training micro-batch
             (plan.train_rows / minibatches / grad_accum_steps rows, split over
             (data, fsdp); V over tensor): the largest activation at long R.
Activations inside the layers are not counted (they depend on remat).
"""
import math

from absl import app
import jax
import ml_collections
import numpy as np

from hybrid_rl import cli
from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding

_CONFIG = cli.define_config("configs/reinforce_ada.py:pod")

HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32, "h100": 80, "h200": 141}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
GIB = 1024**3


class _MeshShape:
  """What fit_spec needs of a mesh: its axis sizes."""

  def __init__(self, shape):
    self.shape = dict(zip(sharding.AXES, shape))


def resolve_mesh(shape, devices: int) -> tuple[int, ...]:
  shape = list(shape)
  if -1 in shape:
    shape[shape.index(-1)] = devices // int(np.prod([s for s in shape if s != -1]))
  if int(np.prod(shape)) != devices:
    raise ValueError(f"mesh {tuple(shape)} does not cover {devices} devices")
  return tuple(shape)


def model_cfg(block: ml_collections.ConfigDict, trained: bool) -> transformer.ModelConfig:
  fields = {f: block[f] for f in ("hidden_size", "intermediate_size", "num_layers", "num_heads",
                                  "num_kv_heads", "head_dim", "vocab_size", "tie_embeddings",
                                  "qkv_bias", "qk_norm", "num_labels")}
  dtype = block.param_dtype if trained else block.compute_dtype
  return transformer.ModelConfig(**fields, param_dtype=dtype, dtype=block.compute_dtype)


def param_bytes_per_device(cfg: transformer.ModelConfig, mesh) -> tuple[int, float]:
  """(total parameter count, bytes per device) under the partition rules."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  abstract = nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  count, per_device = 0, 0.0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    spec = sharding.fit_spec(sharding.param_spec(sharding._path_string(path)),  # pylint: disable=protected-access
                             leaf.shape, mesh)
    shards = 1
    for axes in spec:
      for a in (axes if isinstance(axes, tuple) else (axes,)) if axes else ():
        shards *= mesh.shape[a]
    count += math.prod(leaf.shape)
    per_device += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize / shards
  return count, per_device


def plan_rows(config: ml_collections.ConfigDict, plan: ml_collections.ConfigDict
              ) -> tuple[list[dict], dict]:
  """Rows of GiB per device for the models that are in memory together in one stage."""
  par = config.parallel
  devices = par.num_devices
  shape = resolve_mesh(par.mesh_shape, devices)
  mesh = _MeshShape(shape)
  batch_shards, tensor = shape[0] * shape[1], shape[2]
  rows_global = plan.rollout_rows
  rows = math.ceil(rows_global / config.sampling.chunks / batch_shards)
  seq = config.data.max_prompt_len + config.sampling.max_new_tokens
  out = []
  for name, (block, trained) in plan.models.items():
    block = config[block] if isinstance(block, str) else block
    cfg = model_cfg(block, trained)
    count, p_bytes = param_bytes_per_device(cfg, mesh)
    row = {"model": f"{name} ({block.get('name', '')})", "params (B)": count / 1e9,
           "params": p_bytes / GIB}
    if trained:
      row["grads"] = p_bytes / GIB
      row["adam"] = 2 * p_bytes * 4 / DTYPE_BYTES[cfg.param_dtype] / GIB
    if name in plan.samplers:
      kv_heads = cfg.num_kv_heads / tensor if cfg.num_kv_heads % tensor == 0 else cfg.num_kv_heads
      row["kv cache"] = (2 * cfg.num_layers * rows * seq * kv_heads * cfg.head_dim *
                         DTYPE_BYTES[cfg.dtype]) / GIB
    if trained or name in plan.logit_models:
      micro = math.ceil(plan.train_rows / batch_shards / max(config.rl.minibatches, 1)
                        / config.train.grad_accum_steps)
      row["logits"] = micro * config.sampling.max_new_tokens * cfg.vocab_size * 4 / tensor / GIB
    row["total"] = sum(v for k, v in row.items() if k not in ("model", "params (B)"))
    out.append(row)
  chip = par.tpu_type.split("-")[0]
  meta = {"devices": devices, "mesh": shape, "tpu_type": par.tpu_type,
          "hbm_gib": HBM_GIB.get(chip), "rollout_rows": rows_global, "rows_per_device": rows,
          "seq": seq, "train_rows": plan.train_rows}
  return out, meta


def format_plan(rows: list[dict], meta: dict) -> str:
  cols = ["model", "params (B)", "params", "grads", "adam", "kv cache", "logits", "total"]
  lines = [f"{meta['tpu_type']}: {meta['devices']} devices, mesh (data, fsdp, tensor) = "
           f"{meta['mesh']}, HBM {meta['hbm_gib']} GiB per device; rollout rows "
           f"{meta['rollout_rows']} ({meta['rows_per_device']} per device), sequence {meta['seq']}, "
           f"train rows {meta['train_rows']} per rollout batch",
           "GiB per device:", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    cells = [r["model"]] + [f"{r[c]:.2f}" if c in r else "-" for c in cols[1:]]
    lines.append("| " + " | ".join(cells) + " |")
  total = sum(r["total"] for r in rows)
  lines.append(f"all models together: {total:.1f} GiB per device"
               + (f" of {meta['hbm_gib']} GiB" if meta["hbm_gib"] else ""))
  return "\n".join(lines)


def main(argv):
  del argv
  config = _CONFIG.value
  if "plans" not in config:
    raise app.UsageError("this config has no `plans` block (pod presets have one)")
  for name, plan in config.plans.items():
    print(f"## {name}\n{format_plan(*plan_rows(config, plan))}\n")


if __name__ == "__main__":
  cli.run(main)
