"""Forward and samplers on 8 forced CPU devices equal the single-device results."""
import pytest

from tests.helpers import run_script_result

SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import sampler
jax.config.update("jax_default_matmul_precision", "highest")
assert len(jax.devices()) == 8, jax.devices()
cfg = transformer.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                              num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True)
model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
prompts, valid = sampler.left_pad([[5, 6, 7], [8, 9], [10, 11, 12, 13], [14],
                                   [15, 16], [17], [18, 19, 20], [21, 22]], pad_id=0)
sp = sampler.SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, num_samples=2)
key = jax.random.PRNGKey(0)

def run(m):
  logits = transformer.forward_logits(m, prompts, valid)
  out = sampler.generate(m, prompts, valid, key, sp)
  return np.asarray(logits), np.asarray(out.tokens), np.asarray(out.logprobs)

engine = continuous.EngineSettings("continuous", slots=6, decode_steps=5)
ref = run(model)
ref_continuous = continuous.generate(model, prompts, valid, key, sp, engine)
results = {}
for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2)]:
  mesh = sharding.make_mesh(shape)
  graphdef, state = nnx.split(model)
  state = jax.device_put(state, sharding.param_shardings(state, mesh))
  sharded = nnx.merge(graphdef, state)
  with jax.set_mesh(mesh):
    p = jax.device_put(prompts, sharding.batch_sharding(mesh, 2))
    v = jax.device_put(valid, sharding.batch_sharding(mesh, 2))
    logits = transformer.forward_logits(sharded, p, v)
    out = sampler.generate(sharded, p, v, key, sp)
    cont = continuous.generate(sharded, prompts, valid, key, sp, engine)
  n_shards = len({d for d in state["layers"]["q"].sharding.device_set})
  results[str(shape)] = dict(
      logits=float(np.abs(np.asarray(logits) - ref[0]).max()),
      tokens_equal=bool((np.asarray(out.tokens) == ref[1]).all()),
      logprobs=float(np.abs(np.asarray(out.logprobs) - ref[2]).max()),
      param_devices=n_shards,
      batch_sharded=not out.tokens.sharding.is_fully_replicated,
      continuous_tokens_equal=bool((cont.tokens == ref_continuous.tokens).all()),
      continuous_logprobs=float(np.abs(cont.logprobs - ref_continuous.logprobs).max()))
print("RESULT" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def results():
  return run_script_result(SCRIPT)


@pytest.mark.parametrize("shape", ["(8, 1, 1)", "(2, 4, 1)", "(2, 2, 2)"])
def test_sharded_forward_and_sampler_equal_single_device(results, shape):
  r = results[shape]
  assert r["logits"] < 1e-5
  assert r["tokens_equal"]
  assert r["logprobs"] < 1e-5
  assert r["param_devices"] == 8  # parameters really placed over the whole mesh
  assert r["batch_sharded"]
  # The continuous engine's host loop with the parameters sharded over the mesh.
  assert r["continuous_tokens_equal"] and r["continuous_logprobs"] < 1e-5


ROWS_SCRIPT = r"""
import json
from hybrid_rl import errors
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import rollouts
mesh = sharding.make_mesh((2, 4, 1))
out = {}
for batch, chunks in ((32, 4), (8, 4), (12, 1)):
  try:
    rollouts.check_rows_on_mesh(batch, mesh, chunks)
    out[f"{batch}/{chunks}"] = "ok"
  except errors.ConfigError as e:
    out[f"{batch}/{chunks}"] = str(e)
print("RESULT" + json.dumps(out))
"""


def test_sampling_calls_whose_rows_the_mesh_cannot_split_are_one_line():
  """8 prompts in 4 sampling calls on data x fsdp = 8 devices: 2 rows a call cannot be split
  (jax raised IndivisibleError mid-step); 32 can."""
  out = run_script_result(ROWS_SCRIPT)
  assert out["32/4"] == "ok"
  assert out["8/4"] == ("config.train.batch_size=8 in sampling.chunks=4 calls: a call of 2 "
                        "prompts cannot be split over the mesh's data x fsdp = 8 devices; use a "
                        "multiple of 32")
  assert "a call of 12 prompts" in out["12/1"] and "multiple of 8" in out["12/1"]
