"""experiments.memory_plan: per-device parameter bytes equal what JAX's sharding puts on a device."""
from experiments import memory_plan
from tests import helpers

SCRIPT = r"""
import json, math
import jax
from flax import nnx
from experiments import memory_plan
from configs import pod_models
from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding

block = pod_models.model_block("Qwen3-1.7B")
# A narrow copy of the real architecture: same rules, small enough to materialise.
block.update(hidden_size=64, intermediate_size=96, num_layers=2, vocab_size=1000, num_heads=4,
             num_kv_heads=2, head_dim=16)
cfg = memory_plan.model_cfg(block, trained=True)
out = {}
for shape in [(1, 8, 1), (2, 2, 2), (8, 1, 1), (1, 4, 2)]:
  mesh = sharding.make_mesh(shape)
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  placed = jax.device_put(params, sharding.param_shardings(params, mesh))
  device0 = jax.devices()[0]
  actual = sum(s.data.nbytes for leaf in jax.tree.leaves(placed)
               for s in leaf.addressable_shards if s.device == device0)
  _, planned = memory_plan.param_bytes_per_device(cfg, memory_plan._MeshShape(shape))
  out[str(shape)] = [actual, planned]
print("RESULT" + json.dumps(out))
"""


def test_planned_param_bytes_equal_sharded_bytes_on_a_device():
  result = helpers.run_script_result(SCRIPT, devices=8)
  assert len(result) == 4
  for shape, (actual, planned) in result.items():
    assert planned == actual, shape


def test_plan_of_pod_preset_counts_real_model_size():
  from configs import sparse_to_dense  # pylint: disable=g-import-not-at-top
  config = sparse_to_dense.get_config("pod")
  rows, meta = memory_plan.plan_rows(config, config.plans["stage 1: teacher GRPO"])
  assert meta["mesh"] == (8, 8, 1) and meta["devices"] == 64
  (teacher,) = rows
  assert 8.1 < teacher["params (B)"] < 8.3  # Qwen3-8B
  # float32 params split over fsdp (8) only, replicated over data: about 4 B x 8.19e9 / 8.
  assert abs(teacher["params"] - 8.19e9 * 4 / 8 / 2**30) < 0.05
  assert teacher["adam"] == 2 * teacher["params"]
  text = memory_plan.format_plan(rows, meta)
  assert "teacher (Qwen3-8B)" in text and "of 95 GiB" in text
