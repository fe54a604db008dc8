"""transformers' (PyTorch) generation, the reference our exports are checked against.

PyTorch is imported on use: only tests and benchmarks call this, hybrid_rl
itself never needs it.
"""


def greedy_texts(hf_dir: str, prompt_texts: list[str], max_new_tokens: int,
                 batch_size: int = 16) -> list[str]:
  """Greedy continuations of `prompt_texts` by the HF checkpoint in `hf_dir` (left-padded
  batches, stopping at the tokenizer's eos), decoded without special tokens."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
  tokenizer.padding_side = "left"
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
  out = []
  for start in range(0, len(prompt_texts), batch_size):
    enc = tokenizer(prompt_texts[start:start + batch_size], return_tensors="pt", padding=True,
                    add_special_tokens=False)
    with torch.no_grad():
      generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    out += tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:],
                                  skip_special_tokens=True)
  return out
