r"""Peak host memory of loading a Hugging Face checkpoint onto a mesh, per process.

  python -m experiments.bench.load_memory --layers=12 --out=results/load_memory

Writes a synthetic Llama checkpoint (float32 safetensors, several files and an index,
like a real one) and loads it in `--processes` processes over jax.distributed, each
with `--devices` forced CPU devices, onto an fsdp mesh of all of them, in `--held`
dtype (a frozen model's compute dtype). Each process reports the rise of its resident
set over the load (`VmHWM` after resetting it, minus `VmRSS` before), the bytes its
devices hold, the largest tensor, and the bytes it read from the files. `--whole` loads the old way for comparison:
every process reads the whole checkpoint to host memory, then places it.
On CPU a device's arrays live in host memory, so what the devices hold is counted.
"""
import json
import os
import socket
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

_LAYERS = flags.DEFINE_integer("layers", 12, "Transformer layers of the synthetic model.")
_HIDDEN = flags.DEFINE_integer("hidden", 2048, "Hidden size.")
_INTERMEDIATE = flags.DEFINE_integer("intermediate", 5632, "MLP width.")
_VOCAB = flags.DEFINE_integer("vocab", 32000, "Vocabulary.")
_PROCESSES = flags.DEFINE_integer("processes", 2, "Processes (jax.distributed, gloo).")
_DEVICES = flags.DEFINE_integer("devices", 4, "Forced CPU devices per process.")
_HELD = flags.DEFINE_string("held", "bfloat16", "dtype the parameters are held in.")
_WHOLE = flags.DEFINE_bool("whole", False, "Read the whole checkpoint on every process.")
_DIR = flags.DEFINE_string("dir", "/tmp/hybrid_rl_load_memory", "Where the checkpoint goes.")
_OUT = flags.DEFINE_string("out", "", "Directory for load_memory.json.")
# Internal: a child process of the run.
_CHILD = flags.DEFINE_integer("child", -1, "process id (internal)")
_ADDRESS = flags.DEFINE_string("address", "", "coordinator (internal)")


def write_checkpoint(path: str, *, layers: int, hidden: int, intermediate: int,
                     vocab: int) -> int:
  """A Llama HF directory of random float32 tensors, one safetensors file per 4 layers
  (embeddings and head in their own); returns its tensor bytes."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
            "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": hidden // 128,
            "num_key_value_heads": hidden // 128, "head_dim": 128, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": False}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  rng = np.random.default_rng(0)
  normal = lambda *shape: rng.standard_normal(shape, np.float32) * 0.02
  groups = [{"model.embed_tokens.weight": lambda: normal(vocab, hidden),
             "model.norm.weight": lambda: np.ones(hidden, np.float32),
             "lm_head.weight": lambda: normal(vocab, hidden)}]
  for start in range(0, layers, 4):
    group = {}
    for i in range(start, min(start + 4, layers)):
      p = f"model.layers.{i}."
      group.update({
          p + "input_layernorm.weight": lambda: np.ones(hidden, np.float32),
          p + "post_attention_layernorm.weight": lambda: np.ones(hidden, np.float32),
          **{p + f"self_attn.{n}_proj.weight": lambda: normal(hidden, hidden) for n in "qkvo"},
          p + "mlp.gate_proj.weight": lambda: normal(intermediate, hidden),
          p + "mlp.up_proj.weight": lambda: normal(intermediate, hidden),
          p + "mlp.down_proj.weight": lambda: normal(hidden, intermediate)})
    groups.append(group)
  weight_map, total = {}, 0
  for i, group in enumerate(groups):
    name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
    tensors = {k: make() for k, make in group.items()}
    total += sum(x.nbytes for x in tensors.values())
    save_file(tensors, os.path.join(path, name), metadata={"format": "pt"})
    weight_map.update({k: name for k in tensors})
    del tensors
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
  return total


def _status(field: str) -> int:
  """A /proc/self/status field in bytes (VmRSS: resident now, VmHWM: its peak)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(field)


def child(process_id: int) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(_ADDRESS.value, num_processes=_PROCESSES.value,
                             process_id=process_id)
  from hybrid_rl.models import hf_io  # pylint: disable=g-import-not-at-top
  from hybrid_rl.parallel import distributed  # pylint: disable=g-import-not-at-top
  from hybrid_rl.parallel import sharding  # pylint: disable=g-import-not-at-top
  from hybrid_rl.train import steps  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh((1, -1, 1))
  read_bytes = [0]
  read_slice = hf_io.read_slice

  def counted(*args):
    out = read_slice(*args)
    read_bytes[0] += out.nbytes
    return out
  hf_io.read_slice = counted
  before = _status("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS
    f.write("5")
  if _WHOLE.value:
    model = hf_io.load_hf(_DIR.value, param_dtype=_HELD.value)
    params = steps.params_of(model)
    params = distributed.put_global(params, sharding.param_shardings(params, mesh))
    del model
  else:
    params = steps.params_of(hf_io.load_hf(_DIR.value, param_dtype=_HELD.value, mesh=mesh))
  jax.block_until_ready(params)
  peak = _status("VmHWM") - before
  leaves = jax.tree.leaves(params)
  held = sum(s.data.nbytes for x in leaves for s in x.addressable_shards)
  shapes = hf_io.safetensors_shapes(_DIR.value)
  largest = max(int(np.prod(shape)) * 4 for _, shape in shapes.values())
  print("RESULT" + json.dumps({"process": process_id, "peak_rise_bytes": peak,
                               "read_bytes": read_bytes[0],
                               "held_bytes": held, "largest_tensor_bytes": largest,
                               "devices": jax.local_device_count()}), flush=True)


def main(argv):
  del argv
  if _CHILD.value >= 0:
    child(_CHILD.value)
    return
  total = write_checkpoint(_DIR.value, layers=_LAYERS.value, hidden=_HIDDEN.value,
                           intermediate=_INTERMEDIATE.value, vocab=_VOCAB.value)
  with socket.socket() as s:
    s.bind(("localhost", 0))
    address = f"localhost:{s.getsockname()[1]}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={_DEVICES.value}")
  argv = [a for a in sys.argv[1:] if not a.startswith(("--child", "--address"))]
  procs = [subprocess.Popen([sys.executable, "-m", "experiments.bench.load_memory", *argv,
                             f"--child={i}", f"--address={address}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(_PROCESSES.value)]
  outs = [p.communicate(timeout=1800)[0] for p in procs]
  results = []
  for p, out in zip(procs, outs):
    lines = [l for l in out.splitlines() if l.startswith("RESULT")]
    if p.returncode or not lines:
      sys.exit(f"FATAL a loading process failed ({p.returncode}):\n{out[-3000:]}")
    results.append(json.loads(lines[0][len("RESULT"):]))
  summary = {"checkpoint_bytes": total, "held": _HELD.value, "whole": _WHOLE.value,
             "processes": results}
  for r in results:
    r["peak_over_checkpoint"] = r["peak_rise_bytes"] / total
    r["peak_over_held_plus_tensor"] = r["peak_rise_bytes"] / (r["held_bytes"]
                                                              + r["largest_tensor_bytes"])
    print(f"process {r['process']}: peak rise {r['peak_rise_bytes'] / 2**30:.2f} GiB = "
          f"{r['peak_over_checkpoint']:.2f}x the checkpoint ({total / 2**30:.2f} GiB), "
          f"{r['peak_over_held_plus_tensor']:.2f}x (held {r['held_bytes'] / 2**30:.2f} GiB + "
          f"largest tensor {r['largest_tensor_bytes'] / 2**30:.2f} GiB)")
  print("RESULT" + json.dumps(summary))
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    name = "load_memory_whole.json" if _WHOLE.value else "load_memory.json"
    with open(os.path.join(_OUT.value, name), "w") as f:
      json.dump(summary, f, indent=2)


if __name__ == "__main__":
  app.run(main)
