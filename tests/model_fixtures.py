"""Tiny random Hugging Face models of each family, saved as checkpoints."""
import numpy as np
import torch
import transformers

COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              max_position_embeddings=256)

LLAMA3_SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                      high_freq_factor=4.0, original_max_position_embeddings=32)

FAMILIES = {
    "llama_untied_llama3_rope": (transformers.LlamaConfig,
                                 dict(tie_word_embeddings=False, rope_theta=500000.0,
                                      rope_scaling=LLAMA3_SCALING)),
    "llama_tied": (transformers.LlamaConfig, dict(tie_word_embeddings=True)),
    "qwen2_untied": (transformers.Qwen2Config, dict(tie_word_embeddings=False)),
    "qwen2_tied": (transformers.Qwen2Config, dict(tie_word_embeddings=True)),
    "qwen3_tied": (transformers.Qwen3Config, dict(tie_word_embeddings=True)),
    "qwen3_untied": (transformers.Qwen3Config, dict(tie_word_embeddings=False)),
}


def make_hf_model(family: str, seed: int = 0, head: str = "causal", **overrides):
  """A randomly initialised transformers model (weights perturbed off their init)."""
  config_cls, extra = FAMILIES[family]
  config = config_cls(**{**COMMON, **extra, **overrides})
  torch.manual_seed(seed)
  if head == "causal":
    model = transformers.AutoModelForCausalLM.from_config(config)
  else:
    config.num_labels = 1
    config.pad_token_id = 0
    model = transformers.AutoModelForSequenceClassification.from_config(config)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  return model.eval()


def random_tokens(batch: int, length: int, seed: int = 0, vocab: int = 97) -> np.ndarray:
  return np.random.RandomState(seed).randint(1, vocab, (batch, length))
