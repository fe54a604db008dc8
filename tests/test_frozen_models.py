"""Frozen models (the GRPO reference, the distillation teacher, the reward model) are held in
the compute dtype on the mesh: their own buffers, the values every forward computes
unchanged, and the stages that read them run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_rl.train import steps
from tests.helpers import run_module
from tests.train_fixtures import tiny_model

MICRO = ["--config=configs/default.py:micro", "--config.log.progress=False",
         "--config.log.tensorboard=False", "--config.verifier.num_workers=1",
         "--config.train.steps=1"]


def test_a_frozen_copy_has_its_own_buffers_in_the_compute_dtype():
  mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"))
  params = jax.device_put(steps.params_of(tiny_model()),
                          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  half = steps.frozen_copy(params, "bfloat16")
  assert {str(x.dtype) for x in jax.tree.leaves(half)} == {"bfloat16"}
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(half)):
    assert b.sharding.is_equivalent_to(a.sharding, a.ndim)
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a.astype(jnp.bfloat16)))
  full = steps.frozen_copy(params, "float32")
  expected = [np.asarray(x) for x in jax.tree.leaves(params)]
  for x in jax.tree.leaves(params):
    x.delete()  # what donating the train state does to its buffers
  for a, b in zip(expected, jax.tree.leaves(full)):
    np.testing.assert_array_equal(np.asarray(b), a)


@pytest.mark.parametrize("stage_args", [
    ["--config.stage=grpo", "--config.rl.pg.kl_coef=0.1"],
    ["--config.stage=distill", "--config.distill.rollouts=teacher",
     "--config.distill.kind=fkl_topk"],
])
def test_stages_with_a_frozen_model_run_in_bfloat16(finished, tmp_path, stage_args):
  sft, data = finished
  frozen = ("--config.distill.teacher_from" if "distill" in stage_args[0]
            else "--config.init_from")
  extra = [f"--config.init_from={sft}"] if "distill" in stage_args[0] else []
  proc = run_module("experiments.train", f"--workdir={tmp_path / 'run'}", *MICRO,
                    f"--config.data.data_dir={data}", "--config.model.compute_dtype=bfloat16",
                    *stage_args, f"{frozen}={sft}", *extra, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
