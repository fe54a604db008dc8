"""Hugging Face checkpoints <-> our Transformer, without torch.

Import reads `config.json` and safetensors (one file or shards listed in
`model.safetensors.index.json`) for `LlamaForCausalLM`, `Qwen2ForCausalLM`,
`Qwen3ForCausalLM` and their `*ForSequenceClassification` reward models (whose
`score` matrix fills the scalar head). Export writes a directory that
`transformers.AutoModelForCausalLM.from_pretrained` loads.

Weight table: our stacked parameter -> HF tensor name per layer. HF Linear
weights are [out, in]; ours are [in, out], hence the transposes.
"""
import functools
import json
import os
from typing import Callable, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.flax import save_file

from hybrid_rl.models import transformer

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "LlamaForSequenceClassification": "llama",
    "Qwen2ForSequenceClassification": "qwen2",
    "Qwen3ForSequenceClassification": "qwen3",
}

# our Layers attribute -> (HF name inside model.layers.{i}., transpose)
LAYER_TABLE = {
    "attn_norm": ("input_layernorm.weight", False),
    "q": ("self_attn.q_proj.weight", True),
    "k": ("self_attn.k_proj.weight", True),
    "v": ("self_attn.v_proj.weight", True),
    "o": ("self_attn.o_proj.weight", True),
    "q_bias": ("self_attn.q_proj.bias", False),
    "k_bias": ("self_attn.k_proj.bias", False),
    "v_bias": ("self_attn.v_proj.bias", False),
    "q_norm": ("self_attn.q_norm.weight", False),
    "k_norm": ("self_attn.k_norm.weight", False),
    "mlp_norm": ("post_attention_layernorm.weight", False),
    "gate": ("mlp.gate_proj.weight", True),
    "up": ("mlp.up_proj.weight", True),
    "down": ("mlp.down_proj.weight", True),
}
# our top-level attribute -> (HF name, transpose)
TOP_TABLE = {
    "embed": ("model.embed_tokens.weight", False),
    "final_norm": ("model.norm.weight", False),
    "lm_head": ("lm_head.weight", True),
    "score": ("score.weight", True),
}


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be turned into our model."""


def _rope(hf: Mapping) -> tuple[float, tuple | None]:
  """(theta, Llama-3 scaling) from either the old or the transformers-5 layout."""
  params = dict(hf.get("rope_parameters") or {})
  scaling = dict(hf.get("rope_scaling") or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  merged = {**scaling, **params}
  kind = merged.get("rope_type", merged.get("type", "default"))
  if kind in (None, "default"):
    return float(theta), None
  if kind != "llama3":
    raise CheckpointError(f"unsupported rope scaling type {kind!r} (supported: default, llama3)")
  keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
  return float(theta), tuple((k, float(merged[k])) for k in keys)


def config_from_hf(hf: Mapping, *, dtype: str = "float32",
                   param_dtype: str = "float32") -> transformer.ModelConfig:
  """ModelConfig from a parsed HF config.json; unsupported architectures are named."""
  archs = hf.get("architectures") or []
  arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
  if arch is None:
    raise CheckpointError(f"unsupported architecture {archs or hf.get('model_type')!r} "
                          f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
  family = SUPPORTED_ARCHITECTURES[arch]
  theta, scaling = _rope(hf)
  heads = hf["num_attention_heads"]
  return transformer.ModelConfig(
      vocab_size=hf["vocab_size"],
      hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"],
      num_layers=hf["num_hidden_layers"],
      num_heads=heads,
      num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=theta,
      rope_scaling=scaling,
      rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
      qk_norm=family == "qwen3",
      max_position_embeddings=hf.get("max_position_embeddings", 4096),
      num_labels=hf.get("num_labels", len(hf.get("id2label") or {1: 0}))
      if arch.endswith("ForSequenceClassification") else 0,
      dtype=dtype,
      param_dtype=param_dtype,
  )


def build_model(cfg: transformer.ModelConfig, get: Callable[[str], np.ndarray | None],
                source: str, mesh=None) -> transformer.Transformer:
  """Fills an abstract model from HF-named tensors held whole (a GGUF's, dequantized).

  Args:
    cfg: the architecture.
    get: HF tensor name -> array in HF layout, or None when absent.
    source: where the tensors come from, for error messages.
    mesh: None, or the mesh to place the parameters on (partition rules).
  """
  def shape_of(name):
    array = get(name)
    return None if array is None else tuple(np.shape(array))
  return assemble_model(cfg, shape_of, lambda name, index: np.asarray(get(name))[index],
                        source, mesh)


def _hf_entries(cfg: transformer.ModelConfig, path: str, shape: tuple
                ) -> tuple[list[str], bool, tuple]:
  """(HF tensor names, transposed?, one tensor's shape in our layout) of our parameter at
  "/"-joined `path` of shape `shape`: a stacked layer parameter has one name per layer."""
  if path.startswith("layers/"):
    hf_name, transpose = LAYER_TABLE[path.split("/", 1)[1]]
    return [f"model.layers.{i}.{hf_name}" for i in range(cfg.num_layers)], transpose, shape[1:]
  hf_name, transpose = TOP_TABLE[path]
  return [hf_name], transpose, shape


def assemble_model(cfg: transformer.ModelConfig, shape_of: Callable[[str], tuple | None],
                   read: Callable[[str, tuple], np.ndarray], source: str, mesh=None
                   ) -> transformer.Transformer:
  """Our model in cfg.param_dtype from HF-named tensors read a slice at a time.

  With a mesh, each parameter is a global array (`jax.make_array_from_callback`) placed
  by the partition rules, and each process reads only the slices its own devices hold
  (on a pod, a 70B checkpoint is not read whole by every host). Without one, whole.

  Args:
    shape_of: HF tensor name -> its shape in HF layout, or None when absent.
    read: (HF tensor name, tuple of slices in HF layout) -> that slice.
  """
  from hybrid_rl.parallel import sharding  # pylint: disable=g-import-not-at-top
  model = nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  abstract = nnx.to_pure_dict(state)
  shardings = sharding.param_shardings(abstract, mesh) if mesh is not None else None
  dtype = jnp.dtype(cfg.param_dtype)

  def load(key_path, leaf):
    path = "/".join(str(k.key) for k in key_path)
    names, transpose, expected = _hf_entries(cfg, path, leaf.shape)
    for name in names:  # from the headers: a bad checkpoint fails before any read
      shape = shape_of(name)
      if shape is None:
        raise CheckpointError(f"{source}: missing tensor {name}")
      if (shape[::-1] if transpose else shape) != expected:
        raise CheckpointError(f"{source}: tensor {name} has shape {shape}, expected "
                              f"{expected[::-1] if transpose else expected}")
    stacked = path.startswith("layers/")

    def piece(index: tuple) -> np.ndarray:
      layers, rest = (index[0], index[1:]) if stacked else (slice(None), index)
      rest = tuple(rest) + (slice(None),) * (len(expected) - len(rest))
      chosen = names[layers] if stacked else names
      parts = [read(n, rest[::-1] if transpose else rest) for n in chosen]
      parts = [np.asarray(x).T if transpose else np.asarray(x) for x in parts]
      return (np.stack(parts) if stacked else parts[0]).astype(dtype)

    if shardings is None:
      return jnp.asarray(piece((slice(None),) * len(leaf.shape)))
    sh = functools.reduce(lambda t, k: t[k.key], key_path, shardings)
    return jax.make_array_from_callback(leaf.shape, sh, piece)

  params = jax.tree_util.tree_map_with_path(load, abstract)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def _safetensor_files(path: str) -> list[str]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    return sorted({os.path.join(path, name) for name in weight_map.values()})
  single = os.path.join(path, "model.safetensors")
  if os.path.exists(single):
    return [single]
  raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


def safetensors_shapes(path: str) -> dict[str, tuple[str, tuple]]:
  """{tensor name: (file, shape)} of a checkpoint directory, from the files' headers."""
  out = {}
  for file in _safetensor_files(path):
    if not os.path.exists(file):
      raise CheckpointError(f"{path}: shard {os.path.basename(file)} listed in the index is missing")
    with safe_open(file, framework="numpy") as f:
      for name in f.keys():
        out[name] = (file, tuple(f.get_slice(name).get_shape()))
  return out


def read_slice(file: str, name: str, index: tuple) -> np.ndarray:
  """`index` of tensor `name` (bf16 as ml_dtypes.bfloat16). The file is mapped only for
  this read: pages of a mapping left open would count as the process's memory until the
  whole checkpoint had been touched."""
  with safe_open(file, framework="numpy") as f:
    return f.get_slice(name)[index]


def load_hf(path: str, *, dtype: str = "float32", param_dtype: str = "float32", mesh=None
            ) -> transformer.Transformer:
  """Our Transformer from a HF checkpoint directory (config.json + safetensors), its
  parameters in `param_dtype`; with a mesh, placed on it and each process reading only
  its own devices' slices (assemble_model)."""
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointError(f"{path}: no config.json")
  with open(config_path) as f:
    hf = json.load(f)
  cfg = config_from_hf(hf, dtype=dtype, param_dtype=param_dtype)
  where = safetensors_shapes(path)
  if cfg.tie_embeddings:
    where.pop("lm_head.weight", None)
  shape_of = lambda name: where[name][1] if name in where else None
  return assemble_model(cfg, shape_of, lambda name, index: read_slice(where[name][0], name, index),
                        path, mesh)


def hf_config(cfg: transformer.ModelConfig, *, family: str = "llama",
              extra: Mapping | None = None) -> dict:
  """A HF config.json dict for our config (family: llama | qwen2 | qwen3)."""
  if family == "llama" and (cfg.qkv_bias or cfg.qk_norm):
    family = "qwen3" if cfg.qk_norm else "qwen2"
  arch = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}[family]
  head = "ForSequenceClassification" if cfg.num_labels else "ForCausalLM"
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling:
    rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, **dict(cfg.rope_scaling)}
  out = {
      "architectures": [arch + head],
      "model_type": family,
      "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.hidden_size,
      "intermediate_size": cfg.intermediate_size,
      "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads,
      "head_dim": cfg.head_dim,
      "hidden_act": "silu",
      "rms_norm_eps": cfg.rms_norm_eps,
      "rope_theta": cfg.rope_theta,
      "rope_scaling": rope if cfg.rope_scaling else None,
      "rope_parameters": rope,
      "tie_word_embeddings": cfg.tie_embeddings,
      "attention_bias": cfg.qkv_bias,
      "max_position_embeddings": cfg.max_position_embeddings,
      "torch_dtype": cfg.param_dtype,
  }
  if cfg.num_labels:
    out["num_labels"] = cfg.num_labels
    out["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
    out["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
  out.update(extra or {})
  return out


def hf_tensors(model: transformer.Transformer) -> dict[str, np.ndarray]:
  """Our parameters as HF-named host arrays in HF layout."""
  out = {}
  for attr, param in vars(model.layers).items():
    if isinstance(param, nnx.Param):
      hf_name, transpose = LAYER_TABLE[attr]
      stacked = np.asarray(jax.device_get(param[...]))
      for i in range(stacked.shape[0]):
        out[f"model.layers.{i}.{hf_name}"] = stacked[i].T if transpose else stacked[i]
  for attr, (hf_name, transpose) in TOP_TABLE.items():
    param = getattr(model, attr, None)
    if isinstance(param, nnx.Param):
      array = np.asarray(jax.device_get(param[...]))
      out[hf_name] = array.T if transpose else array
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def save_hf(model: transformer.Transformer, path: str, *, family: str = "llama",
            extra_config: Mapping | None = None) -> str:
  """Writes config.json + model.safetensors that transformers loads."""
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_config(model.cfg, family=family, extra=extra_config), f, indent=2)
  tensors = {k: jnp.asarray(v) for k, v in hf_tensors(model).items()}
  save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
  return path
