"""Export round trip: a finished stage -> stage_io.export_hf -> transformers' generate
gives our sampler's greedy text, and the saved tokenizer encodes as ours does."""
from flax import nnx
import jax
import pytest

from hybrid_rl.data import tokenizer as tokenizer_lib
from hybrid_rl.eval import transformers_reference
from hybrid_rl.models import transformer
from hybrid_rl.sampling import rollouts
from hybrid_rl.train import stage_io
from hybrid_rl.train import steps

pytest.importorskip("torch")

TEXTS = ["Question: Compute 3 + 4.\nAnswer: 3 + 4 = 7. The answer is 7.",
         "Question: Ann has 5 pens and buys 2 more.\nAnswer: 5 + 2 = 7."] * 20
PROMPTS = ["Question: Compute 3 + 4.\nAnswer:", "Question: Ben has 12 cards.\nAnswer:",
           "Question: 9 - 5?\nAnswer:"]


def test_exported_stage_generates_our_greedy_text_in_transformers(tmp_path):
  tok_path = tokenizer_lib.train_tokenizer(TEXTS, 120, str(tmp_path / "tokenizer.json"))
  tok = stage_io.load_tokenizer(tok_path)
  cfg = transformer.ModelConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                tie_embeddings=True, max_position_embeddings=128)
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(3))
  stage_io.export_final(str(tmp_path / "stage"), cfg, steps.params_of(model), tok_path)

  out = stage_io.export_hf(str(tmp_path / "stage"), str(tmp_path / "hf"))

  sp = rollouts.sampling_params(tok, 12, temperature=0.0)
  ours = rollouts.sample(model, tok, PROMPTS, jax.random.PRNGKey(0), sp, prompt_len=64).texts
  theirs = transformers_reference.greedy_texts(out, PROMPTS, max_new_tokens=12)
  assert theirs == ours
  assert any(t.strip() for t in ours)  # the comparison is not between empty strings

  import transformers  # pylint: disable=g-import-not-at-top
  saved = transformers.AutoTokenizer.from_pretrained(out)
  assert saved(PROMPTS[0], add_special_tokens=False)["input_ids"] == tok(
      PROMPTS[0], add_special_tokens=False)["input_ids"]
  assert saved.eos_token_id == tok.eos_token_id
