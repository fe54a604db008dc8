"""A small BPE tokenizer trained on the synthetic corpus, loaded through transformers.

Digits are split one per token (arithmetic stays learnable for tiny models);
text is byte-level, so any string round-trips. The file is a standard
`tokenizer.json`, so the tiny path and the real-model path both go through
`transformers.PreTrainedTokenizerFast`.
"""
import os
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, EOS = "<pad>", "<eos>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str) -> str:
  """Trains a byte-level BPE on `texts` and writes tokenizer.json to `path`."""
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
  ])
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  tok.save(tmp)
  os.replace(tmp, path)
  return path


def load_tokenizer(path: str):
  """transformers fast tokenizer from a tokenizer.json with <pad>/<eos> set."""
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  return PreTrainedTokenizerFast(tokenizer_file=path, pad_token=PAD, eos_token=EOS)
