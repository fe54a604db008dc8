"""TFDS builders (synthetic, GSM8K, MATH), malformed rows, batch iterator, prompts."""
import collections
import contextlib
import io
import json
import re

import numpy as np
import pytest

from hybrid_rl import errors
from hybrid_rl.data import builders
from hybrid_rl.data import jsonl_sources
from hybrid_rl.data import pipeline
from hybrid_rl.data import prompts
from hybrid_rl.data import synthetic_math
from hybrid_rl.rewards import verifiers

SMALL = dict(seed=3, num_train=120, num_validation=30, num_test=30)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return {split: pipeline.load_examples("synthetic_math", split, data_dir, **SMALL)
          for split in ("train", "validation", "test")}


def test_synthetic_splits_are_deterministic_disjoint_and_complete(synthetic, tmp_path):
  again = pipeline.load_examples("synthetic_math", "train", str(tmp_path), **SMALL)
  assert again == synthetic["train"]
  sizes = {s: len(v) for s, v in synthetic.items()}
  assert sizes == {"train": 120, "validation": 30, "test": 30}
  questions = {s: {e["question"] for e in v} for s, v in synthetic.items()}
  assert len(questions["validation"]) == 30 and len(questions["test"]) == 30  # unique
  assert not questions["train"] & questions["validation"]
  assert not questions["train"] & questions["test"]
  assert not questions["validation"] & questions["test"]
  train = synthetic["train"]
  assert {e["family"] for e in train} == {"easy", "hard"}
  assert {e["level"] for e in train} == {1, 2, 3}
  for e in train:
    assert e["question"] and e["answer"] and e["solution"].endswith("}.")


def test_train_is_a_stream_that_leaves_validation_and_test_unchanged(synthetic, tmp_path):
  longer = {**SMALL, "num_train": 3000}
  for split in ("validation", "test"):
    assert pipeline.load_examples("synthetic_math", split, str(tmp_path), **longer) == \
        synthetic[split]
  stream = pipeline.load_examples("synthetic_math", "train", str(tmp_path), **longer)
  kinds = collections.Counter(e["kind"] for e in stream)
  radicals = {e["question"] for e in stream if e["kind"] == "radical"}
  arith = [e["question"] for e in stream if e["kind"] == "arith_chain"]
  # Every kind keeps its share (the level-1..3 radical space is small, so its
  # questions repeat) while a large space stays nearly fresh.
  assert min(kinds.values()) > 3000 / 2 / 6 * 0.7, kinds
  assert len(radicals) < kinds["radical"]
  assert len(set(arith)) > 0.9 * len(arith)
  held_out = {e["question"] for s in ("validation", "test") for e in synthetic[s]}
  assert not held_out & {e["question"] for e in stream}


def test_direct_fraction_strips_the_working_of_train_solutions_only(synthetic, tmp_path):
  direct = {**SMALL, "direct_fraction": 0.5}
  train = pipeline.load_examples("synthetic_math", "train", str(tmp_path), **direct)
  # Same problems in the same order; only some solutions lose their working.
  assert [e["question"] for e in train] == [e["question"] for e in synthetic["train"]]
  stripped = [e for e, full in zip(train, synthetic["train"]) if e["solution"] != full["solution"]]
  assert 0.3 * len(train) < len(stripped) < 0.7 * len(train)
  for e, full in zip(train, synthetic["train"]):
    assert full["solution"].endswith(e["solution"])
    assert (e in stripped) == e["solution"].startswith("The answer is")
  for split in ("validation", "test"):
    assert pipeline.load_examples("synthetic_math", split, str(tmp_path), **direct) == \
        synthetic[split]


def test_hard_share_sets_the_family_mix_of_every_split(synthetic, tmp_path):
  in_order = lambda rows: [e["family"] == "hard" for e in sorted(rows, key=lambda e: e["id"])]
  # The default share is the families' alternation (the fixture's data).
  assert in_order(synthetic["validation"]) == [False, True] * 15
  quarter = {**SMALL, "hard_share": 0.25}
  for split, n in (("train", 120), ("validation", 30), ("test", 30)):
    hard = in_order(pipeline.load_examples("synthetic_math", split, str(tmp_path), **quarter))
    assert len(hard) == n
    # Every prefix of the generated order holds its share, rounded down.
    assert all(sum(hard[:k]) == k // 4 for k in range(1, n + 1)), split


def test_chain_ops_sets_the_worked_steps_of_every_easy_problem(synthetic, tmp_path):
  chained = {**SMALL, "chain_ops": 4}
  train = pipeline.load_examples("synthetic_math", "train", str(tmp_path), **chained)
  by_id = {e["id"]: e for e in synthetic["train"]}
  assert {e["kind"] for e in train if e["family"] == "easy"} == set(synthetic_math.EASY_KINDS)
  for e in train:
    if e["family"] == "hard":  # hard kinds keep their own steps
      continue
    steps = re.findall(r"(-?\d+) ([-+*]) (\d+) = (-?\d+)\.", e["solution"])
    assert len(steps) == 4, e
    for (a, op, b, result), (after, *_) in zip(steps, steps[1:] + [(e["answer"],)]):
      assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(result)
      assert result == after  # each step starts from the previous one's result
    if e["kind"] != "arith_chain":  # trades never give away more than is held
      assert all(int(r) >= 0 for *_, r in steps), e
  assert sum(e["question"] != by_id[e["id"]]["question"] for e in train) >= len(train) // 3


def test_split_slices_are_disjoint_parts(synthetic, tmp_path):
  data_dir = str(tmp_path)
  head = pipeline.load_examples("synthetic_math", "train[:40%]", data_dir, **SMALL)
  tail = pipeline.load_examples("synthetic_math", "train[40%:]", data_dir, **SMALL)
  assert len(head) == 48 and len(tail) == 72
  assert head + tail == synthetic["train"]
  with pytest.raises(ValueError, match="has no split 'dev'"):
    pipeline.load_examples("synthetic_math", "dev", data_dir, **SMALL)


def test_other_seed_gives_other_problems(synthetic, tmp_path):
  other = pipeline.load_examples("synthetic_math", "train", str(tmp_path), **{**SMALL, "seed": 4})
  assert {e["question"] for e in other} != {e["question"] for e in synthetic["train"]}


def test_reference_solutions_are_correct_and_hard_family_defeats_strict_checker(synthetic):
  strict_hits = {"easy": [], "hard": []}
  for e in synthetic["train"]:
    assert verifiers.equivalence_verify(e["solution"], e["answer"]).correct, e
    strict_hits[e["family"]].append(verifiers.strict_verify(e["solution"], e["answer"]).correct)
  assert all(strict_hits["easy"])  # integers: the strict checker is reliable
  assert 0.05 < np.mean(strict_hits["hard"]) < 0.6  # many correct forms it rejects


def test_the_forms_hard_family_is_the_easy_word_problems_written_in_other_forms(tmp_path):
  # Hard to verify, not to solve: the same worked steps as the easy word problems (one
  # operation each), integer gold answers, the final answer in a random one of forms
  # that the oracle accepts and the strict checker refuses (all but the canonical one).
  forms = {**SMALL, "hard_family": "forms", "chain_ops": 3}
  train = pipeline.load_examples("synthetic_math", "train", str(tmp_path), **forms)
  hard = [e for e in train if e["family"] == "hard"]
  assert {e["kind"] for e in hard} == set(synthetic_math.FORMS_KINDS)
  # The word problems are the hard family's alone (a policy could not tell them apart).
  assert {e["kind"] for e in train if e["family"] == "easy"} == {"arith_chain"}
  written = collections.Counter()
  for e in hard:
    assert re.fullmatch(r"\d+", e["answer"]), e
    steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", e["solution"])
    assert len(steps) == 3, e
    unit = re.search(r"How many (\w+)", e["question"]).group(1)
    candidates = synthetic_math.unit_forms(int(e["answer"]), unit)
    boxed = verifiers.last_boxed(e["solution"])
    assert boxed in candidates, e
    written[candidates.index(boxed)] += 1
    for i, form in enumerate(candidates):
      text = f"The answer is \\boxed{{{form}}}."
      assert verifiers.equivalence_verify(text, e["answer"]).correct, form
      assert verifiers.strict_verify(text, e["answer"]).correct == (i == 0), form
  assert len(written) == 5 and written[0] < len(hard) / 2  # every form; canonical a minority
  # Its own cache: the default hard family's data is a different dataset.
  default = pipeline.load_examples("synthetic_math", "train", str(tmp_path),
                                   **{**forms, "hard_family": "solve"})
  assert {e["kind"] for e in default if e["family"] == "hard"} <= set(synthetic_math.HARD_KINDS)


def test_a_build_says_in_one_line_what_it_builds(tmp_path, capfd):
  pipeline.load_examples("synthetic_math", "test", str(tmp_path), **{**SMALL, "seed": 11})
  lines = [l for l in capfd.readouterr().out.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("building synthetic_math (s11_"), lines
  pipeline.load_examples("synthetic_math", "test", str(tmp_path), **{**SMALL, "seed": 11})
  assert not capfd.readouterr().out.strip()  # built once, read after


def test_split_assignment_is_a_function_of_the_question():
  fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
  seen = {}
  for split in fractions:
    for _, p in synthetic_math.generate(split, 40, seed=0, fractions_by_split=fractions):
      assert synthetic_math.split_of(p.question, fractions) == split
      assert seen.setdefault(p.question, split) == split


def _write_lines(path, lines):
  with open(path, "wb") as f:
    for line in lines:
      f.write(line if isinstance(line, bytes) else line.encode() + b"\n")


def test_gsm8k_and_math_rows_parse_and_malformed_rows_are_skipped_with_line_numbers(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  good = {"question": "Tom has 3 apples and buys 1,200 more. How many?",
          "answer": "He has 3 + 1200 = <<3+1200=1203>>1203 apples.\n#### 1,203"}
  _write_lines(manual / "gsm8k_train.jsonl", [
      json.dumps(good),
      "{not json",  # line 2
      json.dumps({"question": "No final line", "answer": "It is 4."}),  # line 3
      b"\xff\xfe invalid utf-8\n",  # line 4
      json.dumps({"answer": "#### 2"}),  # line 5: no question
      json.dumps(good),
  ])
  _write_lines(manual / "gsm8k_test.jsonl", [json.dumps({**good, "question": "Another?"})])
  _write_lines(manual / "math500_test.jsonl", [
      json.dumps({"problem": "What is $1/2 + 1/4$?", "solution": "It is $\\boxed{\\frac34}$.",
                  "answer": "\\frac{3}{4}", "subject": "Algebra", "level": 2,
                  "unique_id": "test/algebra/1.json"}),
      json.dumps({"problem": "Compute $2^3$.", "solution": "$2^3 = \\boxed{8}$.",
                  "subject": "Prealgebra", "level": "Level 1"}),  # gold from \boxed
      json.dumps({"problem": "No answer anywhere.", "solution": "Hmm.", "subject": "x"}),  # line 3
      "[1, 2]",  # line 4: not an object
  ])
  data_dir = str(tmp_path / "tfds")
  train = pipeline.load_examples("gsm8k", "train", data_dir, manual_dir=str(manual))
  assert len(train) == 2
  assert train[0]["answer"] == "1203" and "<<" not in train[0]["solution"]
  assert train[0]["solution"].endswith("\\boxed{1203}.")
  builder = builders.make_builder("gsm8k", data_dir, str(manual))
  skipped = builder.info.metadata["skipped_rows"]["train"]
  assert [line for line, _ in skipped] == [2, 3, 4, 5]
  assert "####" in skipped[1][1] and "question" in skipped[3][1]

  math_test = pipeline.load_examples("math", "test", data_dir, manual_dir=str(manual))
  by_question = {e["question"]: e for e in math_test}
  assert by_question["What is $1/2 + 1/4$?"]["answer"] == "\\frac{3}{4}"
  assert by_question["What is $1/2 + 1/4$?"]["level"] == 2
  assert by_question["Compute $2^3$."]["answer"] == "8"
  assert by_question["Compute $2^3$."]["level"] == 1
  _, skipped = jsonl_sources.read_jsonl(str(manual / "math500_test.jsonl"),
                                        jsonl_sources.parse_math_row)
  assert [line for line, _ in skipped] == [3, 4]


def test_rows_python_json_refuses_are_skipped_not_fatal(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  good = json.dumps({"question": "What is 1 + 1?", "answer": "So 2.\n#### 2"})
  _write_lines(manual / "gsm8k_train.jsonl", [
      good,
      '{"question": "q", "answer": "#### 1", "n": ' + "9" * 5000 + "}",  # int over 4,300 digits
      "[" * 100_000 + "]" * 100_000,  # past the recursion limit
      json.dumps({"question": "q", "answer": "a\n#### 3"}).replace('"q"', '"q\\ud800"'),  # lone surrogate
      good,
  ])
  data_dir = str(tmp_path / "tfds")
  train = pipeline.load_examples("gsm8k", "train", data_dir, manual_dir=str(manual))
  assert len(train) == 2
  skipped = builders.make_builder("gsm8k", data_dir, str(manual)).info.metadata["skipped_rows"]
  reasons = dict(skipped["train"])
  assert sorted(reasons) == [2, 3, 4]
  assert "4300 digits" in reasons[2] and "RecursionError" in reasons[3]
  assert "lone surrogate" in reasons[4]


def test_a_byte_order_mark_and_an_oversized_row(tmp_path, monkeypatch):
  """A UTF-8 BOM before the first row is not part of it; a row past the size cap is skipped
  unparsed (a 50 MB row made a build 10x slower)."""
  path = tmp_path / "gsm8k_train.jsonl"
  good = json.dumps({"question": "What is 1 + 1?", "answer": "So 2.\n#### 2"})
  big = json.dumps({"question": "x" * 5000, "answer": "#### 1"})
  path.write_bytes(b"\xef\xbb\xbf" + (good + "\n" + big + "\n" + good + "\n").encode())
  monkeypatch.setattr(jsonl_sources, "MAX_ROW_BYTES", 4096)
  examples, skipped = jsonl_sources.read_jsonl(str(path), jsonl_sources.parse_gsm8k_row)
  assert [e["id"] for e in examples] == ["gsm8k-1", "gsm8k-3"]
  assert [line for line, _ in skipped] == [2] and "exceeds the 4,096-byte cap" in skipped[0][1]
  assert jsonl_sources.count_valid_rows(str(path), jsonl_sources.parse_gsm8k_row) == 2


def test_a_changed_source_file_is_built_again(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  row = lambda n: json.dumps({"question": f"What is {n}?", "answer": f"It is.\n#### {n}"})
  _write_lines(manual / "gsm8k_train.jsonl", [row(1), row(2)])
  data_dir = str(tmp_path / "tfds")
  assert len(pipeline.load_examples("gsm8k", "train", data_dir, manual_dir=str(manual))) == 2
  _write_lines(manual / "gsm8k_train.jsonl", [row(1), row(2), row(3)])
  rebuilt = pipeline.load_examples("gsm8k", "train", data_dir, manual_dir=str(manual))
  assert [e["answer"] for e in rebuilt] == ["1", "2", "3"]


def test_missing_manual_files_are_named(tmp_path):
  with pytest.raises(Exception, match="gsm8k_test.jsonl"):
    pipeline.load_examples("gsm8k", "test", str(tmp_path / "d"), manual_dir=str(tmp_path))


def test_batch_iterator_is_deterministic_resumable_and_shardable():
  examples = [{"i": i} for i in range(10)]
  it = pipeline.BatchIterator(examples, 4, seed=1)
  batches = [[e["i"] for e in next(it)] for _ in range(6)]  # crosses epoch boundaries
  assert it.position == 6
  resumed = pipeline.BatchIterator(examples, 4, seed=1, position=3)
  assert [[e["i"] for e in next(resumed)] for _ in range(3)] == batches[3:]
  stream = sum(batches, [])
  assert sorted(stream[:10]) == list(range(10))  # first epoch is a permutation
  assert sorted(stream[10:20]) == list(range(10))
  shards = [pipeline.BatchIterator(examples, 4, seed=1, shard_index=i, shard_count=2)
            for i in range(2)]
  for batch in batches[:3]:
    assert sum(([e["i"] for e in next(s)] for s in shards), []) == batch
  with pytest.raises(ValueError, match="does not split over 3 processes"):
    pipeline.BatchIterator(examples, 4, seed=1, shard_count=3)


def test_prompt_formats():
  plain = prompts.format_prompt("What is 2+2?")
  assert plain == "Put the final answer in \\boxed{}.\nQuestion: What is 2+2?\nAnswer:"
  assert prompts.format_prompt("Q", instruction="") == "Question: Q\nAnswer:"

  class FakeTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
      assert not tokenize and add_generation_prompt
      return "|".join(f"{m['role']}:{m['content']}" for m in messages)
  chat = prompts.format_prompt("What?", style="chat", tokenizer=FakeTokenizer(), system="S")
  assert chat == "system:S|user:What?\nPut the final answer in \\boxed{}."
  with pytest.raises(ValueError, match="needs a tokenizer"):
    prompts.format_prompt("Q", style="chat")


@pytest.mark.parametrize("synthetic", [{"chain_ops": 0}, {"chain_ops": 4},
                                       {"chain_ops": 4, "hard_family": "forms"}])
def test_tiny_config_responses_hold_every_reference_solution(synthetic, tmp_path):
  # A solution longer than sampling.max_new_tokens can never be sampled whole, so
  # its kind would score 0 at any policy (radicals did at 64 tokens).
  from configs import default
  from hybrid_rl.train import stage_io
  config = default.get_config("tiny")
  config.data.synthetic.update(num_train=5000, **synthetic)
  tokenizer = stage_io.load_tokenizer(stage_io.tokenizer_path(config, str(tmp_path)))
  rows = [r for split in ("train", "validation", "test")
          for r in stage_io.load_split(config, str(tmp_path), split)]
  longest = max(len(tokenizer(" " + r["solution"], add_special_tokens=False)["input_ids"])
                for r in rows)
  assert longest + 1 <= config.sampling.max_new_tokens  # + EOS
  assert longest > config.sampling.max_new_tokens // 2  # the check sees the long kinds


def test_test_questions_copied_into_train_are_dropped_and_reported(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  row = lambda q, a: json.dumps({"question": q, "answer": f"So {a}.\n#### {a}"})
  _write_lines(manual / "gsm8k_test.jsonl", [row("What is 2 + 3?", 5), row("Sam has 4 cats.", 4)])
  _write_lines(manual / "gsm8k_train.jsonl", [
      row("what is 2+3 ?", 5),  # a test question, spaced and cased otherwise
      row("What is 7 + 1?", 8),
      row("Sam  has 4 cats", 4),
  ])
  data_dir = str(tmp_path / "tfds")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    train = pipeline.load_examples("gsm8k", "train", data_dir, manual_dir=str(manual))
  assert [e["question"] for e in train] == ["What is 7 + 1?"]
  assert "gsm8k: 2 train question(s) are also test questions (normalized text); dropped " \
         "from train (gsm8k-1, gsm8k-3)" in out.getvalue()
  assert len(pipeline.load_examples("gsm8k", "test", data_dir, manual_dir=str(manual))) == 2
  # A train file that holds only test questions is refused in one line.
  _write_lines(manual / "gsm8k_train.jsonl", [row("What is 2 + 3?", 5)])
  with pytest.raises(errors.ConfigError, match="every train question of gsm8k_train.jsonl"):
    pipeline.load_examples("gsm8k", "train", str(tmp_path / "tfds2"), manual_dir=str(manual))

