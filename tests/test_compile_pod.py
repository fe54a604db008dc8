"""The TPU compiler, without a TPU: the micro preset's sampler and train step compile for a
v5e:2x2 slice (libtpu from requirements-tpu.txt), and remat lowers the train step's
compiled memory."""
import json
import subprocess
import sys

import numpy as np

from experiments import compile_pod
from hybrid_rl.sampling import continuous
from tests.helpers import REPO, run_script_result, subprocess_env

SCRIPT = r"""
import dataclasses, json
import jax
from jax.experimental import topologies
from configs import default
from experiments import compile_pod
from hybrid_rl.sampling import continuous
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import continuous
from hybrid_rl.sampling import sampler

config = default.get_config("micro")
config.model.vocab_size = 300
config.model.compute_dtype = "bfloat16"
config.update(stage="grpo")
config.data.max_prompt_len, config.sampling.max_new_tokens = 128, 896
devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices
mesh = sharding.make_mesh((2, 2, 1), devices)
out = {"devices": len(devices), "kind": devices[0].device_kind}
with jax.set_mesh(mesh):
  for remat in ("none", "full"):
    config.model.remat = remat
    cfg = compile_pod.model_config(config.model, trained=True)
    graphdef, params = compile_pod.abstract_model(cfg, mesh)
    compiled = compile_pod.train_function(graphdef, params, mesh, config, rows=16).compile()
    out[f"train_{remat}"] = compile_pod.report(compiled, "v5e", (1.0, 1.0))
  # Training attention through JAX's splash attention kernel (head_dim 128, as the pod
  # models'), beside the chunked path, in the rematerialized train step.
  config.model.head_dim = 128
  for attention in ("chunked", "splash"):
    config.model.train_attention = attention
    cfg = compile_pod.model_config(config.model, trained=True)
    graphdef, params = compile_pod.abstract_model(cfg, mesh)
    compiled = compile_pod.train_function(graphdef, params, mesh, config, rows=16).compile()
    out[f"attention_{attention}"] = dict(compile_pod.report(compiled, "v5e", (1.0, 1.0)),
                                         kernel="tpu_custom_call" in compiled.as_text())
  config.model.update(head_dim=16, train_attention="chunked")
  # The forward-KL warmup's top-k path, with the logits a chunk of positions at a time.
  config.model.vocab_size = 16384
  config.update(stage="distill")
  config.distill.update(kind="fkl_topk", top_k=8)
  for chunk in (0, 128):
    config.model.logits_chunk = chunk
    cfg = compile_pod.model_config(config.model, trained=True)
    graphdef, params = compile_pod.abstract_model(cfg, mesh)
    compiled = compile_pod.train_function(graphdef, params, mesh, config, rows=16).compile()
    out[f"fkl_topk_{chunk}"] = compile_pod.report(compiled, "v5e", (1.0, 1.0))
  sp = sampler.SamplingParams(max_new_tokens=24, num_samples=2, pad_token_id=0,
                              stop_token_ids=(1,))
  fns = compile_pod.sampler_functions(graphdef, params, cfg, mesh, sp, prompts=4,
                                      prompt_len=40, prefix="")
  for name, (fn, args, work) in fns.items():
    out[name] = compile_pod.report(fn.lower(*args).compile(), "v5e", work)
  # The continuous engine: its decode call runs JAX's ragged paged attention kernel (a
  # Mosaic custom call) where head_dim is a multiple of 128, the pure-JAX pages elsewhere.
  engine = continuous.EngineSettings("continuous", decode_steps=4)
  for head_dim in (128, 64):
    wide = dataclasses.replace(cfg, head_dim=head_dim)
    graphdef, params = compile_pod.abstract_model(wide, mesh)
    fns = compile_pod.continuous_functions(graphdef, params, wide, mesh, sp, engine, slots=8,
                                           prompt_len=40)
    for name, (fn, args, work) in fns.items():
      compiled = fn.lower(*args).compile()
      out[f"{name} {head_dim}"] = dict(compile_pod.report(compiled, "v5e", work),
                                       kernel="tpu_custom_call" in compiled.as_text())
# A mesh whose axes do not factor the torus (fsdp 8 on 4x4x4) splits a physical axis.
torus = topologies.get_topology_desc(
    topology_name="v5p:4x4x4", platform="tpu", chip_config_name="megacore",
    chips_per_host_bounds=(2, 2, 1), num_slices=1, wrap=(False, False, False)).devices
out["split_mesh"] = list(sharding.make_mesh((8, 8, 1), torus).devices.shape)
print("RESULT" + json.dumps(out))
"""


def test_micro_preset_compiles_for_a_tpu_slice_and_remat_lowers_its_memory():
  proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True,
                        env=subprocess_env(), timeout=600)
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert line, proc.stderr[-4000:]
  out = json.loads(line[0][len("RESULT"):])
  assert out["devices"] == 4 and "v5" in out["kind"].lower()
  none, full = out["train_none"], out["train_full"]
  assert 0 < full["temp_bytes"] < none["temp_bytes"]
  # A data-parallel update reduces its gradients across the slice.
  assert any(op in none["collectives"] for op in ("all-reduce", "reduce-scatter"))
  for name in ("generate", "prefill", "decode step"):
    assert 0 < out[name]["total_bytes"] < 16 * 2**30 and out[name]["flops"] > 0
  assert out["split_mesh"] == [8, 8, 1]
  assert out["continuous decode 128"]["kernel"] and not out["continuous decode 64"]["kernel"]
  assert out["attention_splash"]["kernel"] and not out["attention_chunked"]["kernel"]
  assert 0 < out["attention_splash"]["total_bytes"] < 16 * 2**30
  for name in ("continuous prefill 128", "continuous decode 128", "continuous decode 64"):
    assert 0 < out[name]["total_bytes"] < 16 * 2**30, name
  # 4 rows a device x 896 positions x 16384 float32 logits, and their gradient, are gone.
  saved = out["fkl_topk_0"]["temp_bytes"] - out["fkl_topk_128"]["temp_bytes"]
  assert saved > 2 * 4 * 896 * 16384 * 4, out


def test_every_pod_plan_covers_the_stages_its_experiment_runs():
  """compile_pod checks what a pod would run: each training stage with steps has a plan
  with its objective, models, sampler and rows."""
  from configs import hero, reinforce_ada, sparse_to_dense
  for config in (hero.get_config("pod"), reinforce_ada.get_config("pod")):
    (plan,) = config.plans.values()
    assert plan.objective == "grpo" and plan.models["policy"][1]
    assert plan.rollout_rows == config.grpo.batch_size * config.grpo.get(
        "num_samples", config.sampling.num_samples)
  for preset in ("pod", "pod_llama"):
    config = sparse_to_dense.get_config(preset)
    stages = {"teacher_grpo": ("teacher", "grpo", "teacher"),
              "fkl": ("student", config.fkl.kind, "teacher"),
              "opd": ("student", config.opd.kind, "student"),
              "student_grpo": ("student", "grpo", "student")}
    ran = {name: want for name, want in stages.items() if config[name].steps > 0}
    planned = {(trained, p.objective, p.samplers[0], p.rollout_rows)
               for p in config.plans.values()
               for trained, (_, is_trained) in p.models.items() if is_trained}
    for name, (model, objective, sampler) in ran.items():
      rows = config[name].batch_size * config[name].get("num_samples", 1)
      assert (model, objective, sampler, rows) in planned, (preset, name, planned)
    assert len(planned) == len(ran)


def test_slice_names_and_collective_parsing():
  assert compile_pod.slice_of("v5p-64") == ("v5p", "v5p:2x4x4", 32)
  assert compile_pod.slice_of("v4-64") == ("v4", "v4:2x4x4", 32)
  assert compile_pod.slice_of("v5litepod-16") == ("v5e", "v5e:4x4", 16)
  hlo = ("%ag = bf16[8,256]{1,0} all-gather(bf16[2,256]{1,0} %p), dimensions={0}\n"
         "%ar = (f32[4]{0}, f32[2,2]{1,0}) all-reduce-start(%a, %b), to_apply=%sum\n"
         "%ar2 = f32[10]{0} all-reduce(f32[10]{0} %c), to_apply=%sum\n")
  assert compile_pod.collectives(hlo) == {"all-gather": [1, 8 * 256 * 2],
                                          "all-reduce": [2, 4 * 4 + 4 * 4 + 40]}


BYTES_SCRIPT = r"""
import json
import jax
from flax import nnx
from configs import pod_models
from experiments import compile_pod
from hybrid_rl.sampling import continuous
from hybrid_rl.models import transformer
from hybrid_rl.parallel import sharding

block = pod_models.model_block("Qwen3-1.7B")
# A narrow copy of the real architecture: same rules, small enough to materialise.
block.update(hidden_size=64, intermediate_size=96, num_layers=2, vocab_size=1000, num_heads=4,
             num_kv_heads=2, head_dim=16)
cfg = compile_pod.model_config(block, trained=True)
out = {}
for shape in [(1, 8, 1), (2, 2, 2), (8, 1, 1), (1, 4, 2)]:
  mesh = sharding.make_mesh(shape)
  _, abstract = compile_pod.abstract_model(cfg, mesh)
  params = nnx.state(transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  placed = jax.device_put(params, sharding.param_shardings(params, mesh))
  device0 = jax.devices()[0]
  actual = sum(s.data.nbytes for leaf in jax.tree.leaves(placed)
               for s in leaf.addressable_shards if s.device == device0)
  out[str(shape)] = [actual, compile_pod.bytes_per_device(abstract)]
print("RESULT" + json.dumps(out))
"""


def test_abstract_parameter_bytes_equal_what_a_device_holds():
  """The stage totals add parameters by bytes_per_device: it must equal the sharded bytes
  JAX puts on one device."""
  result = run_script_result(BYTES_SCRIPT, devices=8)
  assert len(result) == 4
  for shape, (actual, planned) in result.items():
    assert planned == actual, shape


def test_simulated_continuous_schedule_refills_slots_and_counts_what_the_kernel_reads():
  """Requests of 3, 1, 2, 5 tokens (prompts of 10, 2 samples a prompt) on 2 slots, 2 steps
  a call, worked by hand: a live slot reads its length, any other slot one token."""
  s = continuous.simulate_schedule(np.array([3, 1, 2, 5]), prompt_len=10, slots=2,
                                   decode_steps=2, samples=2, reads=[32])
  assert s["live"].tolist() == [2, 1, 2, 1, 1, 1, 1, 1, 1]
  assert s["cache"].tolist() == [22, 13, 24, 13, 12, 13, 14, 15, 16]
  assert s["prefill_prompts"].tolist() == [1, 1, 1]
  assert s["live"].sum() == 3 + 1 + 2 + 5  # every token emitted once


def test_response_lengths_scale_the_measured_ones_to_the_limit(tmp_path, monkeypatch):
  bench = tmp_path / "summary.json"
  bench.write_text(json.dumps({"max_new_tokens": 512, "lengths": [128, 512]}))
  monkeypatch.setattr(compile_pod, "BENCH_LENGTHS", str(bench))
  scaled = compile_pod.response_lengths("bench", 1024, 1000)
  assert set(scaled.tolist()) == {256, 1024} and 0.4 < (scaled == 1024).mean() < 0.6
  uniform = compile_pod.response_lengths("uniform", 4096, 10000)
  assert uniform.min() >= 1 and uniform.max() <= 4096 and abs(uniform.mean() - 2048) < 60


def test_stage_totals_add_what_the_stage_keeps_resident():
  gib = 2**30
  rows = [{"model": "policy", "function": "train step", "total_bytes": 10 * gib,
           "argument_bytes": 6 * gib},
          {"model": "policy", "function": "generate", "total_bytes": 5 * gib,
           "argument_bytes": 2 * gib},
          {"model": "rm", "function": "reward scores", "total_bytes": 3 * gib,
           "argument_bytes": 1 * gib}]
  compile_pod.stage_totals(rows, {"policy": 2 * gib, "rm": 1 * gib})
  # train step: its own total + the frozen RM; generate: + optimizer state beyond the
  # parameters it takes (6 - 2) + the RM; the RM: + the policy's whole train state.
  assert [r["stage_bytes"] / gib for r in rows] == [11, 10, 9]


def test_a_generate_call_costs_its_prefill_and_a_decode_step_per_token():
  rows = [{"function": "generate", "roofline_ms": 1.0}, {"function": "prefill", "roofline_ms": 5.0},
          {"function": "decode step", "roofline_ms": 2.0},
          {"function": "eval generate", "roofline_ms": 1.0},
          {"function": "eval prefill", "roofline_ms": 1.0},
          {"function": "eval decode step", "roofline_ms": 0.5}]
  compile_pod.generate_rooflines(rows, new_tokens=10)
  assert [r["roofline_ms"] for r in rows] == [25.0, 5.0, 2.0, 6.0, 1.0, 0.5]


# A GRPO stage run at toy size on 8 CPU devices, each jitted call it makes recorded (the
# arguments' shapes, dtypes and placement, the static options), against the calls
# compile_pod lowers for the same config.
STAGE_CALLS = r"""
import dataclasses, json, os, tempfile
import jax, ml_collections
from configs import default
from experiments import compile_pod
from hybrid_rl.sampling import continuous
from hybrid_rl.parallel import sharding
from hybrid_rl.sampling import sampler
from hybrid_rl.train import grpo_stage, objectives, stage_io

def signature(tree):
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "sharding")]
  return sorted([list(x.shape), str(x.dtype), sorted(
      (d.id, str(i)) for d, i in x.sharding.devices_indices_map(tuple(x.shape)).items())]
      for x in leaves)

config = default.get_config("micro")
config.update(stage="grpo")
config.model.compute_dtype = "bfloat16"
config.train.update(steps=1, batch_size=8, trim_multiple=0)
config.sampling.update(num_samples=2, chunks=2, max_new_tokens=6)
config.rl.minibatches = 2
config.parallel.mesh_shape = (2, 2, 2)
config.eval.every = 0
config.log.update(progress=False, tensorboard=False)
config.verifier.num_workers = 1
workdir = tempfile.mkdtemp()
calls = {"generate": [], "frozen": [], "train step": []}

def spy(name, fn):
  def wrapped(*args, **kwargs):
    calls[name].append((args, kwargs))
    return fn(*args, **kwargs)
  return wrapped

generate, frozen, make = sampler.generate_jit, objectives.frozen_outputs_jit, grpo_stage.make_train_step
sampler.generate_jit = spy("generate", generate)
objectives.frozen_outputs_jit = spy("frozen", frozen)
grpo_stage.make_train_step = lambda *a: spy("train step", make(*a))
grpo_stage.run(config, workdir)
sampler.generate_jit, objectives.frozen_outputs_jit, grpo_stage.make_train_step = generate, frozen, make

model, _ = stage_io.load_final(workdir)
config.model.vocab_size = model.cfg.vocab_size
plan = ml_collections.ConfigDict(dict(
    models={"policy": ("model", True)}, samplers=("policy",), logit_models=(),
    rollout_rows=16, train_rows=16, num_samples=2, objective="grpo"))
mesh = sharding.make_mesh((2, 2, 2))
with jax.set_mesh(mesh):
  functions, _ = compile_pod.plan_functions(config, plan, mesh)
planned = {f.name: f.call for f in functions}
neutral = lambda sp: dataclasses.replace(sp, stop_token_ids=(), pad_token_id=0)
(gen_args, _), = calls["generate"][:1]
(old_args, old_kwargs), = calls["frozen"]
out = {
    "generate calls": len(calls["generate"]), "train calls": len(calls["train step"]),
    "generate": [signature(gen_args[2:]), signature(planned["generate"].args[2:])],
    "sampling params": [str(neutral(gen_args[1])), str(neutral(planned["generate"].args[1]))],
    "pi_old": [signature(old_args[1:4]), signature(planned["pi_old logprobs"].args[1:4])],
    "pi_old options": [[old_args[4], old_kwargs],
                       [planned["pi_old logprobs"].args[4], planned["pi_old logprobs"].kwargs]],
    "train step": [signature(calls["train step"][0][0]), signature(planned["train step"].args)],
}
print("RESULT" + json.dumps(out, default=str))
"""


def test_compile_pod_lowers_the_calls_a_stage_makes():
  """One source of truth: compile_pod's sampler, pi_old forward and train step take the
  arguments (shapes, dtypes, placement on the mesh) and static options that the GRPO stage
  passes them when it runs, because the stage's own functions build both."""
  out = run_script_result(STAGE_CALLS, devices=8)
  assert out["generate calls"] == 2 and out["train calls"] == 2  # 2 chunks, 2 mini-batches
  for name in ("generate", "sampling params", "pi_old", "pi_old options", "train step"):
    ran, compiled = out[name]
    assert ran == compiled, (name, ran, compiled)
