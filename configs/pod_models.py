"""Architectures of the papers' real models (values from their Hugging Face config.json).

Pod presets copy these into their model blocks so that memory plans and mesh
choices can be made offline; at run time the HF checkpoint in init_from
supplies its own config.
"""
import ml_collections

from configs import default

# hidden, mlp, layers, heads, kv heads, head dim, vocab, tied, qkv bias, qk norm, rope theta
_MODELS = {
    "Qwen2.5-Math-1.5B": (1536, 8960, 28, 12, 2, 128, 151936, True, True, False, 10000.0),
    "Qwen3-1.7B": (2048, 6144, 28, 16, 8, 128, 151936, True, False, True, 1000000.0),
    "Qwen3-4B-Base": (2560, 9728, 36, 32, 8, 128, 151936, True, False, True, 1000000.0),
    "Qwen3-8B": (4096, 12288, 36, 32, 8, 128, 151936, False, False, True, 1000000.0),
    "Llama-3.1-8B-Instruct": (4096, 14336, 32, 32, 8, 128, 128256, False, False, False, 500000.0),
    "Llama-3.3-70B-Instruct": (8192, 28672, 80, 64, 8, 128, 128256, False, False, False, 500000.0),
    "Skywork-Reward-V2-Qwen3-4B": (2560, 9728, 36, 32, 8, 128, 151936, False, False, True,
                                   1000000.0),
}


def model_block(name: str, *, num_labels: int = 0) -> ml_collections.ConfigDict:
  if name not in _MODELS:
    raise ValueError(f"unknown pod model {name!r} (choose {', '.join(_MODELS)})")
  h, f, layers, heads, kv, d, vocab, tied, bias, qk_norm, theta = _MODELS[name]
  return ml_collections.ConfigDict(dict(
      name=name, hidden_size=h, intermediate_size=f, num_layers=layers, num_heads=heads,
      num_kv_heads=kv, head_dim=d, vocab_size=vocab, rope_theta=theta, tie_embeddings=tied,
      qkv_bias=bias, qk_norm=qk_norm, num_labels=num_labels, max_position_embeddings=32768,
      param_dtype="float32", compute_dtype="bfloat16", **POD_MEMORY_SETTINGS))


# Chosen from the compiled figures (experiments/compile_pod.py, results/compile_pod/):
# without remat one 5k-token row of Qwen3-4B's gradient held 226 GB of temporaries.
POD_MEMORY_SETTINGS = dict(default.MEMORY_SETTINGS, remat="full", attention_chunk=1024,
                           logits_chunk=1024)
