"""Logits parity with transformers' PyTorch models, export round trip, bad checkpoints."""
import json
import os

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
