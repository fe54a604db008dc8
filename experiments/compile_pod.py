r"""Compiles every jitted function of a pod preset for its TPU slice, on this machine.

  pip install -r requirements-tpu.txt   # jax[tpu] at the pinned jax version: libtpu
  python -m experiments.compile_pod --config=configs/hero.py:pod --out=results/compile_pod

No TPU is needed: `jax.experimental.topologies` describes the slice
(parallel.tpu_type, e.g. v5p-64 -> 32 chips "v5p:2x4x4"), the mesh is built on
those devices, and each function is lowered from abstract arguments carrying the
run's shardings and compiled by the real TPU compiler (the approach of MaxText's
train_compile.py). For every stage in config.plans it compiles what that stage
runs, built by the stage's own functions from the config the stage runs with
(stage_config): the sampler (sampler.generate_jit with the stage's sampling
settings, its prefill and one decode step), the frozen forwards
(objectives.frozen_outputs_jit with grpo_stage.frozen_logprobs_options /
distill_stage.teacher_options; objectives.score_jit on grpo_stage.reward_model_mesh),
the train step of grpo_stage / distill_stage.make_train_step on their init_state,
and evaluation's generate (eval_stage.sampling_params). It prints, per function, XLA's own
per-device memory (`memory_analysis`: arguments + outputs + temporaries - donated
aliases) against the chip's HBM, FLOPs and bytes (`cost_analysis`), a roofline time
(the larger of FLOPs / bf16 peak and bytes / HBM bandwidth) and the collectives in
the optimized HLO; and the roofline seconds of one RL step. --out writes
<preset>.json and <preset>.md there.

A while loop's body is counted once by cost_analysis, so the whole generate call's
time is estimated as prefill + max_new_tokens x decode step.

The continuous engine (sampling.engine=continuous) is compiled beside it: its prefill
of a full refill and its decode call (continuous.decode_jit, the pages layout read by
JAX's ragged paged attention kernel in shard_map). `--rollout` compiles only those and
adds to the <preset>.json already in --out a `rollout` block: the generate time of one
RL step under stated response-length distributions (`response_lengths`), the static
sampler's (chunks x (prefill + the longest row's steps x its decode step)) beside the
continuous engine's (its schedule simulated, `continuous.simulate_schedule`, each step's roofline
from its model work, the kernel reading each slot's own length).
"""
import functools
import importlib.util
import json
import os
import re
import sys
import time
import types
from typing import Any, NamedTuple

from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybrid_rl import cli
from hybrid_rl import config_checks
from hybrid_rl import errors
from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import rollouts
from hybrid_rl.sampling import sampler
from hybrid_rl.train import batches
from hybrid_rl.train import distill_stage
from hybrid_rl.train import eval_stage
from hybrid_rl.train import grpo_stage
from hybrid_rl.train import objectives
from hybrid_rl.train import stage_runs
from hybrid_rl.train import steps

_CONFIG = cli.define_config("configs/hero.py:pod")
_OUT = flags.DEFINE_string("out", "", "Directory for <preset>.json and <preset>.md.")
_ONLY = flags.DEFINE_string("only", "", "Compile only functions whose name contains this.")
_ROLLOUT = flags.DEFINE_bool("rollout", False, "Compile only the continuous engine's functions "
                             "and add the rollout estimate to the <preset>.json in --out.")
BENCH_LENGTHS = "results/bench_rollout/summary.json"

GIB = 1024**3
# Per chip: HBM bytes, bf16 peak FLOP/s, HBM bytes/s (Cloud TPU system architecture pages).
CHIPS = {"v4": (32 * GIB, 275e12, 1228e9), "v5e": (16 * GIB, 197e12, 819e9),
         "v5p": (95 * GIB, 459e12, 2765e9), "v6e": (32 * GIB, 918e12, 1640e9)}
# Chips -> slice shape: 3-D tori for v4 / v5p, 2-D for v5e / v6e.
SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
             256: "4x8x8", 512: "8x8x8"}
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
             256: "16x16"}
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4,
               "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}


def slice_of(tpu_type: str) -> tuple[str, str, int]:
  """("v5p", "v5p:2x4x4", chips) for "v5p-64": v4 and v5p count TensorCores (2 a chip)."""
  chip, _, count = tpu_type.partition("-")
  chip = "v5e" if chip == "v5litepod" else chip
  if chip not in CHIPS or not count.isdigit():
    raise errors.ConfigError(f"config.parallel.tpu_type={tpu_type!r}: expected one of "
                             f"{', '.join(CHIPS)} with a size, e.g. v5p-64")
  chips = int(count) // 2 if chip in ("v4", "v5p") else int(count)
  shapes = SHAPES_3D if chip in ("v4", "v5p") else SHAPES_2D
  if chips not in shapes:
    sizes = ", ".join(f"{chip}-{n * 2 if chip in ('v4', 'v5p') else n}" for n in shapes)
    raise errors.ConfigError(f"config.parallel.tpu_type={tpu_type!r}: no slice shape for "
                             f"{chips} chips (known: {sizes})")
  return chip, f"{chip}:{shapes[chips]}", chips


def collectives(hlo: str) -> dict[str, list[int]]:
  """{op: [count, bytes of its results]} over the optimized HLO (a loop body counts once)."""
  out = {}
  pattern = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
  for match in pattern.finditer(hlo):
    shapes = re.findall(r"(\w+)\[([\d,]*)\]", match.group(1))
    size = sum(DTYPE_BYTES.get(d, 4) * int(np.prod([int(x) for x in dims.split(",") if x]))
               for d, dims in shapes)
    count, total = out.get(match.group(2), [0, 0])
    out[match.group(2)] = [count + 1, total + size]
  return out


def report(compiled, chip: str, work: tuple[float, float]) -> dict:
  """XLA's per-device memory and cost of one compiled function, and roofline times.

  XLA's cost analysis counts a loop body once (the layer scan, micro-batches, chunks,
  the decode loop), so `flops` / `bytes_accessed` / `xla_roofline_ms` are XLA's figures,
  a lower bound where the function loops and exact where it does not (the decode step);
  `model_roofline_ms` is from `work`, the per-device model FLOPs and HBM bytes
  (`model_work`) of every trip. `roofline_ms` is the larger of the two lower bounds.
  """
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  hbm, peak, bandwidth = CHIPS[chip]
  total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
           - mem.alias_size_in_bytes)
  flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  return {"total_bytes": int(total), "temp_bytes": int(mem.temp_size_in_bytes),
          "argument_bytes": int(mem.argument_size_in_bytes),
          "output_bytes": int(mem.output_size_in_bytes),
          "alias_bytes": int(mem.alias_size_in_bytes),
          "hbm_fraction": total / hbm, "flops": flops, "bytes_accessed": accessed,
          "xla_roofline_ms": 1e3 * max(flops / peak, accessed / bandwidth),
          "model_flops": work[0], "model_bytes": work[1],
          "model_roofline_ms": 1e3 * max(work[0] / peak, work[1] / bandwidth),
          "roofline_ms": 1e3 * max(work[0] / peak, work[1] / bandwidth, flops / peak,
                                   accessed / bandwidth),
          "collectives": collectives(compiled.as_text())}


def model_work(cfg: transformer.ModelConfig, mesh, kind: str, *, rows: int, tokens: int,
               slots: int, logit_positions: int) -> tuple[float, float]:
  """(FLOPs, HBM bytes) per device of one call over `rows` rows of `tokens` new tokens
  attending to `slots` keys, with `logit_positions` positions through the LM head.

  kind: "forward", "train" (forward + backward = 3 forwards, + 1 forward of the layers
  when rematerialized) or "decode" (one token a row: reads every weight and the cache).
  Attention counts the whole [tokens, slots] product, as the code computes it.
  """
  devices = int(np.prod(list(mesh.shape.values())))
  l, h, n, k, d = cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  layer_params = cfg.num_params(include_embeddings=False)
  head = 2 * h * cfg.vocab_size * logit_positions
  layers = tokens * 2 * layer_params + l * 4 * tokens * slots * n * d
  forward = rows * (layers + head)
  flops = {"forward": forward, "decode": forward,
           "train": 3 * forward + (rows * layers if cfg.remat != "none" else 0)}[kind] / devices
  weight_bytes = cfg.num_params() * jnp.dtype(cfg.dtype).itemsize / mesh.shape["tensor"]
  cache_bytes = rows * l * 2 * k * slots * d * jnp.dtype(cfg.dtype).itemsize / devices
  passes = {"forward": 1, "decode": 1, "train": 3}[kind]
  return flops, passes * weight_bytes + (cache_bytes if kind == "decode" else 0.0)


def model_config(block: ml_collections.ConfigDict, trained: bool) -> transformer.ModelConfig:
  """A pod model block as the stage builds it: trained models keep float32 master weights,
  frozen ones are loaded in the compute dtype."""
  fields = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
            "num_kv_heads", "head_dim", "rope_theta", "tie_embeddings", "qkv_bias", "qk_norm",
            "num_labels", "max_position_embeddings") + transformer.RUNTIME_FIELDS
  settings = {f: block[f] for f in fields if f in block}
  if settings.get("decode_attention", "auto") == "auto":  # the backend here is the CPU
    settings["decode_attention"] = "dot"
  return transformer.ModelConfig(
      **settings, dtype=block.compute_dtype,
      param_dtype=block.param_dtype if trained else block.compute_dtype)


def _abstract(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def abstract_model(cfg: transformer.ModelConfig, mesh):
  """(graphdef, parameters as sharded ShapeDtypeStructs) without allocating weights."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: transformer.Transformer(cfg,
                                                                             rngs=nnx.Rngs(0))))
  return graphdef, _abstract(state, sharding.param_shardings(state, mesh))


def rows_of(mesh, shape, dtype):
  """A [rows, ...] batch array split by rows over the batch axes."""
  return jax.ShapeDtypeStruct(shape, dtype,
                              sharding=sharding.batch_sharding(mesh, len(shape), shape[0]))


def replicated(mesh, shape=(), dtype=jnp.uint32):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec()))


def _prefill(graphdef, state, prompts, valid, slots: int):
  """The sampler's prefill, with the layer weights its generate call gathers first."""
  model = nnx.merge(graphdef, state)
  weights = sharding.decode_weights(model.layer_params(), model.cfg.compute_dtype)
  return sampler.prefill(model, prompts, valid, slots, weights)[:2]


def _decode_step(graphdef, state, layer_weights, token, position, kv_valid, cache, index):
  """One step of the sampler's decode loop, given the weights it gathered before the loop."""
  return sampler.decode_step(nnx.merge(graphdef, state), token, position, kv_valid, cache, index,
                             layer_weights)


def abstract_decode_weights(cfg: transformer.ModelConfig, mesh) -> list[dict]:
  """What sharding.decode_weights makes of the layer weights, as sharded ShapeDtypeStructs."""
  shapes = jax.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)).layers.arrays())
  layer = {}
  for name, x in shapes.items():
    spec = sharding.fit_spec(sharding.decode_weight_spec(name), x.shape[1:], mesh)
    layer[name] = jax.ShapeDtypeStruct(x.shape[1:], cfg.compute_dtype,
                                       sharding=jax.sharding.NamedSharding(mesh, spec))
  return [dict(layer) for _ in range(cfg.num_layers)]


def sampler_functions(graphdef, params, cfg, mesh, sp: sampler.SamplingParams, *, prompts: int,
                      prompt_len: int, prefix: str) -> dict:
  """{name: (jitted, abstract args, model work)} of a generate call over `prompts` x
  sp.num_samples rows (sampler.generate_jit with the stage's own SamplingParams): the
  whole call, its prefill and one step of its decode loop."""
  samples, new_tokens = sp.num_samples, sp.max_new_tokens
  rows, slots = prompts * samples, prompt_len + new_tokens
  prefill = model_work(cfg, mesh, "forward", rows=prompts, tokens=prompt_len, slots=slots,
                       logit_positions=1)
  decode = model_work(cfg, mesh, "decode", rows=rows, tokens=1, slots=slots, logit_positions=1)
  whole = tuple(a + new_tokens * b for a, b in zip(prefill, decode))
  prompt_args = (rows_of(mesh, (prompts, prompt_len), jnp.int32),
                 rows_of(mesh, (prompts, prompt_len), jnp.bool_))
  cache_sharding = jax.sharding.NamedSharding(mesh, sharding.fit_spec(
      sharding.CACHE_SPEC, (rows, cfg.num_kv_heads, slots, cfg.head_dim), mesh))
  cache = [{k: jax.ShapeDtypeStruct((rows, cfg.num_kv_heads, slots, cfg.head_dim),
                                    cfg.compute_dtype, sharding=cache_sharding)
            for k in ("k", "v")} for _ in range(cfg.num_layers)]
  return {
      f"{prefix}generate": (sampler.generate_jit,
                            (graphdef, sp, params, *prompt_args, replicated(mesh, (2,))), whole),
      f"{prefix}prefill": (jax.jit(_prefill, static_argnums=(0, 4)),
                           (graphdef, params, *prompt_args, slots), prefill),
      f"{prefix}decode step": (
          jax.jit(_decode_step, static_argnums=0, donate_argnums=6),
          (graphdef, params, abstract_decode_weights(cfg, mesh), rows_of(mesh, (rows,), jnp.int32),
           rows_of(mesh, (rows,), jnp.int32), rows_of(mesh, (rows, slots), jnp.bool_), cache,
           replicated(mesh, (), jnp.int32)),
          decode),
  }


def continuous_functions(graphdef, params, cfg, mesh, sp: sampler.SamplingParams,
                         settings: continuous.EngineSettings, *, slots: int, prompt_len: int
                         ) -> dict:
  """{name: (jitted, abstract args, model work)} of the continuous engine on `slots` slots:
  the prefill of a full refill (slots / G prompts) and one decode call
  (settings.decode_steps steps) reading the pages layout at its longest read length;
  its model work is one decode step at that length (every slot full)."""
  page = settings.page_size
  length = continuous.read_lengths(prompt_len + sp.max_new_tokens, settings.read_buckets,
                                   page)[-1]
  pool_shape = (slots * length // page, page, 2 * cfg.num_kv_heads, cfg.head_dim)
  heads = "tensor" if cfg.num_kv_heads % mesh.shape["tensor"] == 0 else None
  batch = sharding.BATCH if slots % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0 else None
  pool = jax.ShapeDtypeStruct(pool_shape, cfg.compute_dtype, sharding=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(batch, None, heads, None)))
  cache = [pool] * cfg.num_layers
  logits = rows_of(mesh, (slots, cfg.vocab_size), jnp.float32)
  per_slot = lambda dtype: rows_of(mesh, (slots,), dtype)
  prompts = max(1, slots // sp.num_samples)
  prefill_args = (graphdef, params, cache, logits, rows_of(mesh, (prompts, prompt_len), jnp.int32),
                  rows_of(mesh, (prompts,), jnp.int32), per_slot(jnp.int32),
                  per_slot(jnp.int32))
  decode_args = (graphdef, sp, length, settings.decode_steps, params, cache, logits,
                 per_slot(jnp.int32), per_slot(jnp.int32), per_slot(jnp.bool_),
                 per_slot(jnp.int32), replicated(mesh, (2,)))
  return {
      "continuous prefill": (continuous.prefill_jit, prefill_args, model_work(
          cfg, mesh, "forward", rows=prompts, tokens=prompt_len, slots=prompt_len,
          logit_positions=1)),
      "continuous decode": (continuous.decode_jit, decode_args, model_work(
          cfg, mesh, "decode", rows=slots, tokens=1, slots=length, logit_positions=1)),
  }


def response_lengths(kind: str, max_new_tokens: int, count: int, seed: int = 0) -> np.ndarray:
  """`count` response lengths (tokens, EOS included) from a stated distribution:
  "bench": the lengths SmolLM2-135M-Instruct sampled on GSM8K test prompts at T=1 in
  experiments.bench.rollout (BENCH_LENGTHS), scaled from its limit to max_new_tokens
  (rows it truncated stay truncated); "uniform": uniform on 1..max_new_tokens (no
  assumption but the limit: a mean of half of it, few truncated)."""
  rng = np.random.default_rng(seed)
  if kind == "uniform":
    return rng.integers(1, max_new_tokens + 1, count)
  with open(BENCH_LENGTHS) as f:
    measured = json.load(f)
  drawn = rng.choice(np.asarray(measured["lengths"]), count) * max_new_tokens
  return np.clip(np.round(drawn / measured["max_new_tokens"]), 1, max_new_tokens).astype(int)


def _seconds(work: tuple[float, float], chip: str) -> float:
  _, peak, bandwidth = CHIPS[chip]
  return max(work[0] / peak, work[1] / bandwidth)


def rollout_estimate(config, plan, mesh, chip: str, rows: list[dict], distribution: str) -> dict:
  """One RL step's generate seconds under a response-length distribution: the static
  sampler's from its compiled rooflines (each chunk runs to its longest row), the
  continuous engine's from continuous.simulate_schedule with each step's model work (weights
  once, every slot's own cache length: the kernel's reads; prefills of the prompts each
  refill admits). Both at roofline."""
  sc = stage_config(config, plan)
  block = plan.models[plan.samplers[0]][0]
  cfg = model_config(config[block] if isinstance(block, str) else block, trained=True)
  p, n, g = sc.data.max_prompt_len, sc.sampling.max_new_tokens, sc.sampling.num_samples
  requests = sc.train.batch_size * g
  lengths = response_lengths(distribution, n, requests)
  ms = {r["function"]: r["roofline_ms"] for r in rows if r.get("roofline_ms") is not None}
  chunks = rollouts.chunk_slices(requests, sc.sampling.chunks)
  static = sum(ms["prefill"] + int(lengths[c].max()) * ms["decode step"] for c in chunks) / 1e3
  settings = rollouts.default_slots(continuous.settings_from_config(sc.sampling), requests,
                                    sc.sampling.chunks)
  reads = continuous.read_lengths(p + n, settings.read_buckets, settings.page_size)
  schedule = continuous.simulate_schedule(lengths, p, settings.slots, settings.decode_steps, g,
                                          reads)
  one_slot = model_work(cfg, mesh, "decode", rows=settings.slots, tokens=1, slots=1,
                        logit_positions=1)
  no_cache = model_work(cfg, mesh, "decode", rows=settings.slots, tokens=1, slots=0,
                        logit_positions=1)
  per_token = [(a - b) / settings.slots for a, b in zip(one_slot, no_cache)]
  _, peak, bandwidth = CHIPS[chip]
  decode = np.maximum((no_cache[0] + per_token[0] * schedule["cache"]) / peak,
                      (no_cache[1] + per_token[1] * schedule["cache"]) / bandwidth).sum()
  prefill = sum(_seconds(model_work(cfg, mesh, "forward", rows=int(k), tokens=p, slots=p,
                                    logit_positions=1), chip)
                for k in schedule["prefill_prompts"])
  return {"engine": "continuous", "length_distribution": distribution, "requests": requests,
          "mean_length": float(lengths.mean()),
          "truncated_fraction": float((lengths == n).mean()),
          "slots": settings.slots, "decode_steps_run": int(len(schedule["live"])),
          "live_fraction": float(schedule["live"].mean() / settings.slots),
          "step_seconds_static": static,
          "step_seconds_continuous": float(decode + prefill),
          "continuous_prefill_seconds": float(prefill)}


class Call(NamedTuple):
  """A jitted function and the (abstract) arguments a stage calls it with."""
  jitted: Any
  args: tuple
  kwargs: dict

  def compile(self):
    return self.jitted.lower(*self.args, **self.kwargs).compile()


class Function(NamedTuple):
  """One function of a stage's plan: the call, the mesh it runs under (a reward model's
  is a host's, see grpo_stage.reward_model_mesh) and its model work (FLOPs, bytes)."""
  name: str
  model: str
  call: Call
  mesh: Any
  work: tuple


def frozen_function(graphdef, params, mesh, options: dict, *, rows: int, prompt_len: int,
                    new_tokens: int) -> Call:
  """objectives.frozen_outputs_jit over the whole rollout batch, with the static options
  the stage passes it (grpo_stage.frozen_logprobs_options, distill_stage.teacher_options)."""
  args = (graphdef, params, rows_of(mesh, (rows, prompt_len + new_tokens), jnp.int32),
          rows_of(mesh, (rows, prompt_len + new_tokens), jnp.bool_), new_tokens)
  return Call(objectives.frozen_outputs_jit, args, options)


def score_function(graphdef, params, mesh, *, rows: int, length: int) -> Call:
  """objectives.score_jit (what score_rows calls) on rm_batch_rows rows."""
  return Call(objectives.score_jit, (graphdef, params, rows_of(mesh, (rows, length), jnp.int32),
                                     rows_of(mesh, (rows, length), jnp.bool_)), {})


def stage_module(stage_config: ml_collections.ConfigDict):
  return grpo_stage if stage_config.stage == "grpo" else distill_stage


def train_function(graphdef, params, mesh, stage_config: ml_collections.ConfigDict, *,
                   rows: int) -> Call:
  """The stage's own train step (grpo_stage / distill_stage.make_train_step) on one
  update's `rows` rows, lowered with its abstract train state and batch."""
  objective = stage_config.distill.kind if stage_config.stage == "distill" else "grpo"
  new_tokens = stage_config.sampling.max_new_tokens
  length = stage_config.data.max_prompt_len + new_tokens
  state = abstract_train_state(params, stage_config, mesh)
  batch = {"tokens": rows_of(mesh, (rows, length), jnp.int32),
           "valid": rows_of(mesh, (rows, length), jnp.bool_),
           "mask": rows_of(mesh, (rows, new_tokens), jnp.bool_)}
  if objective == "grpo":
    logprobs = lambda: rows_of(mesh, (rows, new_tokens), jnp.float32)
    rl = stage_config.rl
    # grpo_stage.update: pi_old's logprobs where a batch takes several updates (one takes
    # them from its own forward), the reference's where the loss has a KL term.
    batch = batches.PGBatch(
        **batch, advantages=rows_of(mesh, (rows,), jnp.float32), sampler_logprobs=logprobs(),
        old_logprobs=logprobs() if rl.epochs * rl.minibatches > 1 else None,
        ref_logprobs=logprobs() if rl.pg.kl_coef else None)
  elif objective == "opd_pg":
    batch["teacher_logprobs"] = rows_of(mesh, (rows, new_tokens), jnp.float32)
    batch["sampler_logprobs"] = rows_of(mesh, (rows, new_tokens), jnp.float32)
  elif objective == "fkl_topk":
    k = stage_config.distill.top_k
    batch["teacher_top_logprobs"] = rows_of(mesh, (rows, new_tokens, k), jnp.float32)
    batch["teacher_top_ids"] = rows_of(mesh, (rows, new_tokens, k), jnp.int32)
  elif objective != "fkl_sampled":  # fkl_full, rkl_full, jsd
    vocab = stage_config.model.vocab_size
    batch["teacher_logits"] = rows_of(mesh, (rows, new_tokens, vocab), jnp.float32)
  jitted = stage_module(stage_config).make_train_step(stage_config, graphdef, state, mesh)
  return Call(jitted, (state, batch, replicated(mesh, (2,))), {})


def abstract_train_state(params, stage_config: ml_collections.ConfigDict, mesh):
  """The train state the stage keeps for a trained model (its own init_state: float32
  master weights, optimizer state, step, RNG, stats) as ShapeDtypeStructs with the
  shardings its jitted train step gives it."""
  master = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32),
                        nnx.to_pure_dict(params))
  state = jax.eval_shape(
      functools.partial(stage_module(stage_config).init_state, stage_config), master)
  return _abstract(state, steps.state_shardings(state, mesh))


def bytes_per_device(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(tree)))


def generate_rooflines(rows: list[dict], new_tokens: int) -> None:
  """A generate call's roofline_ms: its prefill's plus new_tokens of its decode step's
  (the whole call's cost analysis counts the decode loop's body once)."""
  ms = {r["function"]: r.get("roofline_ms") for r in rows if r["function"] != "generate"}
  for r in rows:
    prefix = r["function"][:-len("generate")]
    if r["function"].endswith("generate") and "error" not in r and all(
        ms.get(prefix + f) is not None for f in ("prefill", "decode step")):
      r["roofline_ms"] = ms[prefix + "prefill"] + new_tokens * ms[prefix + "decode step"]


def stage_totals(rows: list[dict], params: dict[str, int]) -> None:
  """Adds `stage_bytes` to each row: its function's total plus what the stage keeps on the
  device meanwhile (every other model's parameters, and a trained model's optimizer state
  and master weights, measured as its train step's arguments)."""
  state = {r["model"]: r["argument_bytes"] for r in rows
           if r["function"] == "train step" and "error" not in r}
  resident = {m: state.get(m, p) for m, p in params.items()}
  for r in rows:
    if "error" in r:
      continue
    # A trained model's other functions take its parameters, not its optimizer state.
    own = (state[r["model"]] - params[r["model"]]
           if r["model"] in state and r["function"] != "train step" else 0)
    r["stage_bytes"] = r["total_bytes"] + own + sum(v for m, v in resident.items()
                                                    if m != r["model"])


def stage_config(config: ml_collections.ConfigDict, plan) -> ml_collections.ConfigDict:
  """The config the plan's stage runs with, as the experiment derives it: the trained
  model's block as `model`, the stage's batch (rollout_rows / num_samples prompts),
  samples and, for distillation, its loss and top-k."""
  trained = [block for block, is_trained in plan.models.values() if is_trained]
  samples = plan.get("num_samples", config.sampling.num_samples)
  objective = plan.get("objective", "grpo")
  overrides = {"stage": "grpo" if objective == "grpo" else "distill",
               "sampling.num_samples": samples,
               "train.batch_size": plan.rollout_rows // samples}
  if trained:
    block = trained[0]
    overrides["model"] = config[block] if isinstance(block, str) else block
  if objective != "grpo":
    overrides["distill.kind"] = objective
    overrides["distill.top_k"] = plan.get("top_k", config.distill.top_k)
  return stage_runs.derive(config, overrides)


def resident_bytes(config: ml_collections.ConfigDict, plan, mesh) -> int:
  """Bytes one device holds between a stage's steps: each trained model's train state and
  each frozen model's parameters, placed as the stage places them (plan_functions)."""
  sc = stage_config(config, plan)
  total = 0
  for block, trained in plan.models.values():
    block = config[block] if isinstance(block, str) else block
    cfg = model_config(block, trained)
    on = grpo_stage.reward_model_mesh(mesh) if cfg.num_labels else mesh
    _, params = abstract_model(cfg, on)
    total += bytes_per_device(abstract_train_state(params, sc, on) if trained else params)
    if trained and sc.stage == "grpo" and sc.rl.pg.kl_coef:  # the reference's frozen copy
      total += bytes_per_device(abstract_model(model_config(block, False), mesh)[1])
  return total


def held_model(params, trained: bool) -> dict:
  """How a stage holds a model's parameters: their dtype, bytes per device, and the
  bytes per device of the arrays replicated on every device (the partition rules
  shard every matrix; norms and biases stay whole)."""
  leaves = jax.tree.leaves(params)
  replicated = [x for x in leaves if x.sharding.is_fully_replicated]
  return {"dtype": sorted({str(x.dtype) for x in leaves}), "trained": trained,
          "bytes_per_device": bytes_per_device(params),
          "replicated_bytes_per_device": bytes_per_device(replicated)}


def plan_functions(config: ml_collections.ConfigDict, plan, mesh
                   ) -> tuple[list[tuple], dict[str, dict]]:
  """([Function], {model: held_model}) for one
  stage of the preset, built by the stage's own functions from its config (stage_config).
  Trained models are held in param_dtype (float32 master weights), frozen ones (teacher,
  reward model) in the compute dtype, as the stages hold them."""
  sc = stage_config(config, plan)
  p, r = sc.data.max_prompt_len, sc.sampling.max_new_tokens
  length = p + r
  grpo = sc.stage == "grpo"
  update_rows = plan.train_rows // (sc.rl.minibatches if grpo else 1)
  out, held = [], {}
  host_mesh = grpo_stage.reward_model_mesh(mesh)
  stand_in = types.SimpleNamespace(eos_token_id=1, pad_token_id=0)  # ids do not change shapes
  for model_name, (block, trained) in plan.models.items():
    block = config[block] if isinstance(block, str) else block
    cfg = model_config(block, trained)
    graphdef, params = abstract_model(cfg, host_mesh if cfg.num_labels else mesh)
    label = f"{model_name} ({block.get('name', '')})"
    held[label] = held_model(params, trained)
    forward = lambda rows, logits, cfg=cfg: model_work(
        cfg, mesh, "forward", rows=rows, tokens=length, slots=length, logit_positions=logits)
    if model_name in plan.samplers:
      fns = sampler_functions(graphdef, params, cfg, mesh,
                              rollouts.config_sampling_params(stand_in, sc.sampling),
                              prompt_len=p, prefix="",
                              prompts=sc.train.batch_size // sc.sampling.chunks)
      fns.update(sampler_functions(graphdef, params, cfg, mesh,
                                   eval_stage.sampling_params(sc, stand_in), prompt_len=p,
                                   prefix="eval ",
                                   prompts=sc.eval.batch_size // sc.sampling.chunks))
      settings = rollouts.default_slots(continuous.settings_from_config(sc.sampling),
                                        sc.train.batch_size * sc.sampling.num_samples,
                                        sc.sampling.chunks)
      fns.update(continuous_functions(graphdef, params, cfg, mesh,
                                      rollouts.config_sampling_params(stand_in, sc.sampling),
                                      settings, slots=settings.slots, prompt_len=p))
      for fn_name, (fn, args, work) in fns.items():
        out.append(Function(fn_name, label, Call(fn, args, {}), mesh, work))
    if trained:
      if grpo and sc.rl.epochs * sc.rl.minibatches > 1:
        out.append(Function("pi_old logprobs", label, frozen_function(
            graphdef, params, mesh, grpo_stage.frozen_logprobs_options(sc, plan.train_rows),
            rows=plan.train_rows, prompt_len=p, new_tokens=r), mesh, forward(plan.train_rows, r)))
      if grpo and sc.rl.pg.kl_coef:  # the reference: a frozen copy in the compute dtype
        _, ref = abstract_model(model_config(block, trained=False), mesh)
        ref_label = f"reference ({block.get('name', '')})"
        held[ref_label] = held_model(ref, False)
        out.append(Function("reference logprobs", ref_label, frozen_function(
            graphdef, ref, mesh, grpo_stage.frozen_logprobs_options(sc, plan.train_rows),
            rows=plan.train_rows, prompt_len=p, new_tokens=r), mesh, forward(plan.train_rows, r)))
      out.append(Function("train step", label,
                          train_function(graphdef, params, mesh, sc, rows=update_rows), mesh,
                          model_work(cfg, mesh, "train", rows=update_rows, tokens=length,
                                     slots=length, logit_positions=r)))
    elif cfg.num_labels:
      rows = sc.reward.rm_batch_rows
      out.append(Function("reward scores", label,
                          score_function(graphdef, params, host_mesh, rows=rows, length=length),
                          host_mesh, model_work(cfg, host_mesh, "forward", rows=rows,
                                                tokens=length, slots=length, logit_positions=0)))
    else:
      options = distill_stage.teacher_options(sc, plan.train_rows)
      if options is not None:  # fkl_sampled reads only the teacher's samples
        out.append(Function(f"teacher {options['what']}", label, frozen_function(
            graphdef, params, mesh, options, rows=plan.train_rows, prompt_len=p, new_tokens=r),
                            mesh, forward(plan.train_rows, r)))
  return out, held


def updates_per_batch(config: ml_collections.ConfigDict, plan) -> int:
  """GRPO takes rl.epochs x rl.minibatches updates of a rollout batch; distillation one."""
  if plan.get("objective", "grpo") == "grpo":
    return config.rl.epochs * config.rl.minibatches
  return 1


def step_seconds(config, plan, rows: list[dict]) -> float:
  """Roofline seconds of one RL step: chunks x (prefill + tokens x decode step), the
  frozen forwards (reward scores once per rm_batch_rows a host), and the train steps
  (updates_per_batch)."""
  ms = {r["function"]: r["roofline_ms"] for r in rows}
  sample = config.sampling.chunks * (ms.get("prefill", 0.0) + config.sampling.max_new_tokens
                                     * ms.get("decode step", 0.0))
  score_calls = plan.rollout_rows / (config.reward.rm_batch_rows
                                     * max(1, config.parallel.num_devices // 4))
  teacher = sum(v for k, v in ms.items() if k.startswith("teacher "))
  frozen = (ms.get("pi_old logprobs", 0.0) + teacher
            + np.ceil(score_calls) * ms.get("reward scores", 0.0))
  train = updates_per_batch(config, plan) * ms.get("train step", 0.0)
  return (sample + frozen + train) / 1e3


def compile_preset(config: ml_collections.ConfigDict, preset: str, only: str = "",
                   rollout_from: dict | None = None) -> dict:
  """Compiles the preset's functions (those whose name contains `only`). With
  `rollout_from`, an earlier full result of the preset: only the continuous engine's
  functions, and a `rollout` block estimated with that result's static rows."""
  if rollout_from is not None:
    only = "continuous"
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  chip, topology, chips = slice_of(config.parallel.tpu_type)
  # v4 and v5p run their two TensorCores as one device (megacore), 4 chips a host.
  options = (dict(chip_config_name="megacore", chips_per_host_bounds=(2, 2, 1), num_slices=1,
                  wrap=(False, False, False)) if chip in ("v4", "v5p") else {})
  devices = topologies.get_topology_desc(topology_name=topology, platform="tpu",
                                         **options).devices
  try:
    mesh = sharding.make_mesh(config.parallel.mesh_shape, devices)
  except ValueError as e:
    raise errors.ConfigError(f"config.parallel.mesh_shape={tuple(config.parallel.mesh_shape)} "
                             f"on {config.parallel.tpu_type}: {e}") from e
  hbm = CHIPS[chip][0]
  print(f"{preset}: {config.parallel.tpu_type} = {chips} chips ({topology}), mesh (data, fsdp, "
        f"tensor) {tuple(mesh.shape.values())}, HBM {hbm / GIB:.0f} GiB per chip", flush=True)
  result = {"preset": preset, "tpu_type": config.parallel.tpu_type, "topology": topology,
            "mesh": list(mesh.shape.values()), "hbm_bytes": hbm, "jax": jax.__version__,
            "functions": [], "models": {}, "step_seconds": {}, "rollout": {}}
  with jax.set_mesh(mesh):
    for stage, plan in config.plans.items():
      rows = []
      functions, held = plan_functions(config, plan, mesh)
      result["models"][stage] = held
      result.setdefault("resident_bytes", {})[stage] = resident_bytes(config, plan, mesh)
      for fn in functions:
        if only and only not in fn.name:
          continue
        t0 = time.perf_counter()
        try:
          with jax.set_mesh(fn.mesh):
            row = report(fn.call.compile(), chip, fn.work)
        except Exception as e:  # pylint: disable=broad-except
          message = str(e).splitlines()[0][:300]
          row = {"error": message, "total_bytes": None, "temp_bytes": None, "flops": None,
                 "roofline_ms": None}
        row.update(stage=stage, function=fn.name, model=fn.model,
                   compile_s=round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(format_row(row, hbm), flush=True)
      earlier = [] if rollout_from is None else [
          r for r in rollout_from["functions"]
          if r["stage"] == stage and not r["function"].startswith("continuous")]
      stage_totals(earlier + rows, {m: h["bytes_per_device"] for m, h in held.items()})
      generate_rooflines(rows, config.sampling.max_new_tokens)
      for r in rows:
        if "stage_bytes" in r:
          print(f"  {r['stage']} | {r['function']} | with the stage's other arrays: "
                f"{r['stage_bytes'] / GIB:.1f} GiB ({100 * r['stage_bytes'] / hbm:.0f}% of HBM)")
      result["functions"] += rows
      if all("error" not in r for r in rows) and not only:
        result["step_seconds"][stage] = step_seconds(config, plan, rows)
        print(f"  {stage}: roofline {result['step_seconds'][stage]:.1f} s per RL step", flush=True)
      if rollout_from is not None and plan.samplers:
        result["rollout"][stage] = [rollout_estimate(config, plan, mesh, chip, earlier, kind)
                                    for kind in ("bench", "uniform")]
        for e in result["rollout"][stage]:
          print(f"  {stage} rollout ({e['length_distribution']} lengths, mean "
                f"{e['mean_length']:.0f}, {100 * e['truncated_fraction']:.0f}% truncated): "
                f"static {e['step_seconds_static']:.1f} s, continuous "
                f"{e['step_seconds_continuous']:.1f} s on {e['slots']} slots", flush=True)
  return result


def format_row(row: dict, hbm: int) -> str:
  head = f"  {row['stage']} | {row['function']} | {row['model']}"
  if "error" in row:
    return f"{head} | FAILED: {row['error']}"
  coll = ", ".join(f"{k} {c}x {b / 2**20:.0f} MiB" for k, (c, b) in row["collectives"].items())
  return (f"{head} | {row['total_bytes'] / GIB:.1f} GiB ({100 * row['total_bytes'] / hbm:.0f}% "
          f"of HBM; temp {row['temp_bytes'] / GIB:.1f}) | {row['flops'] / 1e12:.1f} TFLOP | "
          f"{row['roofline_ms']:.1f} ms | {coll or 'no collectives'} | {row['compile_s']} s")


def to_markdown(result: dict) -> str:
  lines = [f"## {result['preset']}: {result['tpu_type']} ({result['topology']}), mesh "
           f"{tuple(result['mesh'])}, HBM {result['hbm_bytes'] / GIB:.0f} GiB per chip", "",
           "| stage | function | model | GiB per device | with the stage's other arrays | "
           "% of HBM | roofline ms | model-work ms | XLA's ms (loop bodies once) | collectives |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in result["functions"]:
    if "error" in r:
      lines.append(f"| {r['stage']} | {r['function']} | {r['model']} | FAILED: {r['error']} "
                   "| | | | | | |")
      continue
    coll = ", ".join(f"{k} {c}x" for k, (c, _) in r["collectives"].items()) or "-"
    lines.append(f"| {r['stage']} | {r['function']} | {r['model']} | "
                 f"{r['total_bytes'] / GIB:.1f} | {r['stage_bytes'] / GIB:.1f} | "
                 f"{100 * r['stage_bytes'] / result['hbm_bytes']:.0f} | {r['roofline_ms']:.1f} | "
                 f"{r['model_roofline_ms']:.1f} | {r['xla_roofline_ms']:.1f} | {coll} |")
  lines += ["", "| stage | model | held as | GiB per device | of which replicated |",
            "|---|---|---|---|---|"]
  for stage, held in result["models"].items():
    for model, h in held.items():
      lines.append(f"| {stage} | {model} | {', '.join(h['dtype'])}"
                   f"{' (trained: float32 master + optimizer)' if h['trained'] else ''} | "
                   f"{h['bytes_per_device'] / GIB:.2f} | "
                   f"{h['replicated_bytes_per_device'] / GIB:.3f} |")
  for stage, seconds in result["step_seconds"].items():
    lines.append(f"\n{stage}: roofline {seconds:.1f} s per RL step")
  for stage, estimates in result.get("rollout", {}).items():
    lines += ["", f"{stage}: generate seconds of one RL step at roofline, static sampler vs "
              "continuous engine", "",
              "| lengths | mean | truncated | static s | continuous s (slots) | static / "
              "continuous |", "|---|---|---|---|---|---|"]
    for e in estimates:
      lines.append(f"| {e['length_distribution']} | {e['mean_length']:.0f} | "
                   f"{100 * e['truncated_fraction']:.0f}% | {e['step_seconds_static']:.1f} | "
                   f"{e['step_seconds_continuous']:.1f} ({e['slots']}) | "
                   f"{e['step_seconds_static'] / e['step_seconds_continuous']:.2f}x |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  config = _CONFIG.value
  if "plans" not in config:
    raise errors.ConfigError("this config has no `plans` block (pod presets have one)")
  # Values only: the mesh is the slice's, built below from its topology, and the paths
  # are the pod's.
  config_checks.validate(config)
  if importlib.util.find_spec("libtpu") is None:
    sys.exit("FATAL the TPU compiler is not installed: pip install -r requirements-tpu.txt")
  # "configs/hero.py:pod" -> "hero_pod"
  preset = os.path.basename(flags.FLAGS["config"].config_filename).replace(".py:", "_")
  if _ROLLOUT.value:
    if not _OUT.value:
      sys.exit("FATAL --rollout adds to <preset>.json in --out: set --out")
    path = os.path.join(_OUT.value, f"{preset}.json")
    if not os.path.exists(path):
      sys.exit(f"FATAL --rollout: {path} does not exist; run compile_pod without --rollout first")
    with open(path) as f:
      earlier = json.load(f)
    added = compile_preset(config, preset, rollout_from=earlier)
    result = dict(earlier, rollout=added["rollout"], rollout_jax=added["jax"],
                  functions=[r for r in earlier["functions"]
                             if not r["function"].startswith("continuous")] + added["functions"])
  else:
    result = compile_preset(config, preset, _ONLY.value)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, f"{preset}.json"), "w") as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(_OUT.value, f"{preset}.md"), "w") as f:
      f.write(to_markdown(result))


if __name__ == "__main__":
  cli.run(main)
