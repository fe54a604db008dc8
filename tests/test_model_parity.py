"""Logits parity with transformers' PyTorch models, export round trip, bad checkpoints."""
import json
import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
import torch
import transformers

from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer
from tests import helpers
from tests.model_fixtures import FAMILIES, make_hf_model, random_tokens


def _our_logits(model, tokens, valid=None):
  tokens = jnp.asarray(tokens)
  valid = jnp.ones(tokens.shape, bool) if valid is None else jnp.asarray(valid)
  return np.asarray(transformer.forward_logits(model, tokens, valid))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_match_transformers(tmp_path, family):
  hf = make_hf_model(family)
  hf.save_pretrained(tmp_path)
  ours = hf_io.load_hf(str(tmp_path))
  tokens = random_tokens(2, 48)
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(_our_logits(ours, tokens), ref, atol=1e-4, rtol=0)


def test_left_padded_rows_match_unpadded(tmp_path):
  hf = make_hf_model("qwen3_tied")
  hf.save_pretrained(tmp_path)
  ours = hf_io.load_hf(str(tmp_path))
  row = random_tokens(1, 20, seed=3)
  padded = np.concatenate([np.zeros((1, 7), int), row], axis=1)
  valid = np.concatenate([np.zeros((1, 7), bool), np.ones((1, 20), bool)], axis=1)
  np.testing.assert_allclose(_our_logits(ours, padded, valid)[:, 7:], _our_logits(ours, row),
                             atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gradients_match_transformers(tmp_path, family):
  """The backward pass (linear's written-out VJP, attention, RoPE, norms, tied heads) gives
  PyTorch's parameter gradients for a weighted next-token loss on left-padded rows."""
  hf = make_hf_model(family, seed=5)
  hf.save_pretrained(tmp_path)
  ours = hf_io.load_hf(str(tmp_path))
  tokens = random_tokens(2, 30, seed=6)
  valid = np.ones(tokens.shape, bool)
  valid[1, :9] = False
  weights = np.random.RandomState(7).randn(2, 29).astype(np.float32) * valid[:, :-1] * valid[:, 1:]

  hf.train()
  positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0)
  logits = hf(torch.tensor(tokens[:, :-1]), attention_mask=torch.tensor(valid[:, :-1]),
              position_ids=torch.tensor(positions[:, :-1]), use_cache=False).logits
  logprobs = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens[:, 1:, None]))[..., 0]
  (logprobs * torch.tensor(weights)).sum().backward()

  graphdef, state = nnx.split(ours)
  def loss(state):
    model = nnx.merge(graphdef, state)
    logprobs = transformer.token_logprobs(model, jnp.asarray(tokens), jnp.asarray(valid))
    return jnp.sum(logprobs * weights)
  ours_grads = hf_io.hf_tensors(nnx.merge(graphdef, jax.grad(loss)(state)))
  reference = {name: p.grad.numpy() for name, p in hf.named_parameters()}
  assert set(ours_grads) == set(reference)
  for name, grad in ours_grads.items():
    scale = np.abs(reference[name]).max()
    np.testing.assert_allclose(grad, reference[name], atol=2e-5 * scale + 1e-7, rtol=0,
                               err_msg=name)


@pytest.mark.parametrize("family", ["llama_untied_llama3_rope", "qwen2_tied", "qwen3_untied"])
def test_export_then_transformers_load_gives_same_logits(tmp_path, family):
  hf = make_hf_model(family, seed=1)
  hf.save_pretrained(tmp_path / "in")
  ours = hf_io.load_hf(str(tmp_path / "in"))
  hf_io.save_hf(ours, str(tmp_path / "out"))
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  tokens = random_tokens(2, 33, seed=2)
  with torch.no_grad():
    ref = reloaded(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(_our_logits(ours, tokens), ref, atol=1e-4, rtol=0)
  # and our own import of the export is exact
  again = hf_io.load_hf(str(tmp_path / "out"))
  np.testing.assert_array_equal(_our_logits(again, tokens), _our_logits(ours, tokens))


@pytest.mark.parametrize("family", ["llama_tied", "qwen3_untied"])
def test_sequence_classification_reward_model_scores_match(tmp_path, family):
  hf = make_hf_model(family, head="classification")
  hf.save_pretrained(tmp_path)
  ours = hf_io.load_hf(str(tmp_path))
  assert ours.cfg.num_labels == 1
  tokens = random_tokens(3, 25, seed=4)
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  valid = jnp.ones(tokens.shape, bool)
  hidden, _ = ours(jnp.asarray(tokens), transformer.positions_from_valid(valid), valid)
  np.testing.assert_allclose(np.asarray(ours.scores(hidden, valid)), ref, atol=1e-4, rtol=0)


def test_bf16_params_keep_float32_logits(tmp_path):
  make_hf_model("llama_tied").save_pretrained(tmp_path)
  ours = hf_io.load_hf(str(tmp_path), dtype="bfloat16", param_dtype="bfloat16")
  assert ours.layers.q[...].dtype == jnp.bfloat16
  logits = transformer.forward_logits(ours, jnp.asarray(random_tokens(1, 9)),
                                      jnp.ones((1, 9), bool))
  assert logits.dtype == jnp.float32


def _edit_checkpoint(path, edit):
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  edit(tensors)
  save_file(tensors, file, metadata={"format": "pt"})


def test_missing_tensor_is_named(tmp_path):
  make_hf_model("llama_untied_llama3_rope").save_pretrained(tmp_path)
  _edit_checkpoint(tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(hf_io.CheckpointError, match=r"missing tensor model\.layers\.1\.mlp\.up_proj\.weight"):
    hf_io.load_hf(str(tmp_path))


def test_wrong_shape_is_named(tmp_path):
  make_hf_model("qwen2_untied").save_pretrained(tmp_path)

  def shrink(t):
    t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][:5]
  _edit_checkpoint(tmp_path, shrink)
  with pytest.raises(hf_io.CheckpointError,
                     match=r"model\.layers\.0\.self_attn\.k_proj\.weight has shape \(5, 64\), expected \(32, 64\)"):
    hf_io.load_hf(str(tmp_path))


def test_unsupported_architecture_is_named(tmp_path):
  make_hf_model("llama_tied").save_pretrained(tmp_path)
  config = json.load(open(tmp_path / "config.json"))
  config["architectures"] = ["MistralForCausalLM"]
  json.dump(config, open(tmp_path / "config.json", "w"))
  with pytest.raises(hf_io.CheckpointError, match="unsupported architecture.*MistralForCausalLM"):
    hf_io.load_hf(str(tmp_path))


def test_sharded_checkpoint_with_index_loads_and_missing_shard_is_named(tmp_path):
  hf = make_hf_model("qwen3_tied")
  hf.save_pretrained(tmp_path, max_shard_size="20KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  ours = hf_io.load_hf(str(tmp_path))
  tokens = random_tokens(1, 12)
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(_our_logits(ours, tokens), ref, atol=1e-4, rtol=0)
  shard = sorted(p for p in os.listdir(tmp_path) if p.endswith(".safetensors"))[-1]
  os.remove(tmp_path / shard)
  with pytest.raises(hf_io.CheckpointError, match=f"shard {shard} listed in the index is missing"):
    hf_io.load_hf(str(tmp_path))


SHARDED_LOAD = r"""
import json, os, sys
import jax, numpy as np
from flax import nnx
from hybrid_rl.models import hf_io, transformer
from hybrid_rl.parallel import sharding
from hybrid_rl.train import stage_io, steps
path = sys.argv[1]
cfg = transformer.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=3,
                              num_heads=4, num_kv_heads=2, head_dim=8, qk_norm=True,
                              qkv_bias=True)
model = transformer.Transformer(cfg, rngs=nnx.Rngs(3))
hf_io.save_hf(model, os.path.join(path, "hf"), family="qwen3")
stage_io.export_final(os.path.join(path, "stage"), cfg, steps.params_of(model), "")
mesh = sharding.make_mesh((1, 4, 2))
out = {}
for name, load in [
    ("hf", lambda mesh: hf_io.load_hf(os.path.join(path, "hf"), mesh=mesh)),
    ("hf_bf16", lambda mesh: hf_io.load_hf(os.path.join(path, "hf"), param_dtype="bfloat16",
                                           mesh=mesh)),
    ("stage", lambda mesh: stage_io.load_final(os.path.join(path, "stage"), mesh=mesh)[0])]:
  whole, placed = steps.params_of(load(None)), steps.params_of(load(mesh))
  rules = sharding.param_shardings(whole, mesh)
  out[name] = {
      "equal": all(bool(np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32)))
                   for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(placed))),
      "dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(placed)}),
      "placed_by_rules": all(x.sharding.is_equivalent_to(s, x.ndim) for x, s in
                             zip(jax.tree.leaves(placed), jax.tree.leaves(rules))),
      "sharded": sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(placed))}
print("RESULT" + json.dumps(out))
"""


def test_checkpoints_load_onto_a_mesh_with_the_values_of_a_whole_read(tmp_path):
  """load_hf / load_final with a mesh: the same values as read whole, every parameter
  placed by the partition rules, in the dtype asked for (a frozen model's compute dtype)."""
  proc = subprocess.run([sys.executable, "-c", SHARDED_LOAD, str(tmp_path)], cwd=helpers.REPO,
                        capture_output=True, text=True, timeout=600,
                        env=helpers.subprocess_env(
                            XLA_FLAGS="--xla_force_host_platform_device_count=8"))
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert line, proc.stderr[-4000:]
  out = json.loads(line[0][len("RESULT"):])
  for name, r in out.items():
    assert r["equal"] and r["placed_by_rules"] and r["sharded"] >= 9, (name, r)
  assert out["hf"]["dtypes"] == ["float32"] and out["hf_bf16"]["dtypes"] == ["bfloat16"]


def test_each_process_reads_only_its_own_slices_of_a_checkpoint(tmp_path):
  """Two processes (jax.distributed) load a 4-file checkpoint onto an fsdp mesh over both:
  each reads about half of its bytes (the replicated norms whole), not all of them."""
  proc = helpers.run_module(
      "experiments.bench.load_memory", "--layers=4", "--hidden=256", "--intermediate=512",
      "--vocab=1024", f"--dir={tmp_path / 'ckpt'}", "--held=float32")
  summary = json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1][6:])
  total = summary["checkpoint_bytes"]
  assert len(summary["processes"]) == 2
  for r in summary["processes"]:
    assert 0.45 * total < r["read_bytes"] < 0.55 * total, (r, total)
    # Read straight into what it holds (a replicated norm read once for all its devices).
    assert r["read_bytes"] <= r["held_bytes"] < r["read_bytes"] + 0.01 * total, r
