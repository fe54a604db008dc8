"""A tiny policy and GRPO/SFT batches for train-step tests."""
from flax import nnx
import jax.numpy as jnp
import numpy as np

from hybrid_rl.models import transformer
from hybrid_rl.train import batches
from hybrid_rl.train import objectives
from hybrid_rl.train import steps

CFG = transformer.ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2,
                              num_heads=4, num_kv_heads=2, head_dim=8)


def tiny_model(seed=0, cfg=CFG):
  return transformer.Transformer(cfg, rngs=nnx.Rngs(seed))


def grpo_batch(model, n=8, p=5, r=7, seed=0):
  """Left-padded prompts + responses, with old_logprobs from `model` itself."""
  rs = np.random.RandomState(seed)
  tokens = rs.randint(1, CFG.vocab_size, (n, p + r))
  valid = np.ones((n, p + r), bool)
  for i in range(n):
    valid[i, : rs.randint(0, p - 1)] = False  # left padding
    tokens[i][~valid[i]] = 0
  mask = np.ones((n, r), bool)
  for i in range(n):
    mask[i, rs.randint(2, r + 1):] = False
  valid[:, p:] = mask
  graphdef, _ = nnx.split(model)
  old = objectives.frozen_outputs_jit(graphdef, steps.params_of(model), jnp.asarray(tokens),
                                      jnp.asarray(valid), r, what="logprobs")["logprobs"]
  return batches.PGBatch(tokens=jnp.asarray(tokens, jnp.int32), valid=jnp.asarray(valid),
                         mask=jnp.asarray(mask), old_logprobs=old,
                         advantages=jnp.asarray(rs.randn(n), jnp.float32))
