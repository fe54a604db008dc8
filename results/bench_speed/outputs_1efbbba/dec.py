# At 1efbbba: times sampler.generate at two commits side by side (run from each tree with PYTHONPATH=<tree>).
# Times sampler.generate (SmolLM2 architecture, random weights) at batch 16, 64 + 128 tokens, greedy.
import sys, time
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from hybrid_rl.models import transformer
from hybrid_rl.sampling import sampler
cfg = transformer.ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
    num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0, rms_norm_eps=1e-5, tie_embeddings=True)
model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
b, p = 16, 64
tokens = jnp.asarray(np.random.RandomState(0).randint(100, 49152, (b, p)), jnp.int32)
valid = jnp.ones((b, p), bool)
for n in (1, 128):
  sp = sampler.SamplingParams(max_new_tokens=n, temperature=0.0)
  f = lambda: np.asarray(sampler.generate(model, tokens, valid, jax.random.PRNGKey(0), sp).tokens)
  f()
  ts = []
  for _ in range(3):
    t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
  print(sys.argv[1], "new", n, "s", [round(t, 2) for t in ts], flush=True)
