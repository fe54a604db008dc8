"""A sharded train step on 8 forced CPU devices equals the single-device step."""
import pytest

from tests.helpers import run_script_result

SCRIPT = r"""
import json
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from hybrid_rl.algorithms import policy_gradient as pg
from hybrid_rl.parallel import sharding
from hybrid_rl.train import objectives, steps
from tests.train_fixtures import grpo_batch, tiny_model
jax.config.update("jax_default_matmul_precision", "highest")
assert len(jax.devices()) == 8
model = tiny_model()
graphdef, _ = nnx.split(model)
loss_fn = objectives.grpo_objective(graphdef, pg.PGConfig(epsilon_high=0.28, kl_coef=0.01))
# SGD with momentum: Adam's 1/sqrt(v) turns float rounding in near-zero
# gradients into O(lr) parameter differences, which would test Adam, not sharding.
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
batch = grpo_batch(model, n=16)
batch = batch._replace(ref_logprobs=batch.old_logprobs - 0.1)
step = steps.make_train_step(loss_fn, optimizer)

def run(mesh):
  state = steps.init_state(steps.params_of(model), optimizer, jax.random.PRNGKey(0))
  jitted = steps.jit_train_step(step, state, batch, mesh, donate=False)
  if mesh is not None:
    state = jax.device_put(state, steps.state_shardings(state, mesh))
  losses = []
  for i in range(3):
    state, metrics = jitted(state, batch, jax.random.PRNGKey(i))
    losses += [float(metrics["loss"]), float(metrics["grad_norm"])]
  return state, losses

ref_state, ref_losses = run(None)
out = {}
for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2)]:
  mesh = sharding.make_mesh(shape)
  state, losses = run(mesh)
  diff = max(float(jnp.abs(a - b).max()) for a, b in
             zip(jax.tree.leaves(state["params"]), jax.tree.leaves(ref_state["params"])))
  q = state["params"]["layers"]["q"]
  out[str(shape)] = dict(param_diff=diff, loss_diff=max(abs(a - b) for a, b in zip(losses, ref_losses)),
                         q_sharded=not q.sharding.is_fully_replicated)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def results():
  return run_script_result(SCRIPT)


@pytest.mark.parametrize("shape", ["(8, 1, 1)", "(2, 4, 1)", "(2, 2, 2)"])
def test_sharded_step_equals_single_device(results, shape):
  r = results[shape]
  assert r["param_diff"] < 1e-5 and r["loss_diff"] < 1e-5
  if shape != "(8, 1, 1)":
    assert r["q_sharded"]  # fsdp / tensor axes really split the weights
