"""GSM8K and MATH rows from local JSONL files, with malformed rows skipped and counted.

GSM8K rows: {"question", "answer"} where the answer is a worked solution with
"<<a*b=c>>" calculator notes and a final "#### n" line.
MATH rows: {"problem", "solution", "answer"?, "subject", "level", "unique_id"?};
without an "answer" field the gold is the solution's last \\boxed{}.

Every parser returns our common example schema:
  {"id", "question", "solution", "answer", "family", "kind", "level"}.
"""
import json
import logging
import re
from typing import Callable

from hybrid_rl.rewards.verifiers import last_boxed

Example = dict


class RowError(ValueError):
  """A row that cannot become an example."""


def _field(row: dict, key: str) -> str:
  value = row.get(key)
  if not isinstance(value, str) or not value.strip():
    raise RowError(f"missing or empty field {key!r}")
  return value


def parse_gsm8k_row(row: dict, line_no: int) -> Example:
  question, answer = _field(row, "question"), _field(row, "answer")
  if "####" not in answer:
    raise RowError("answer has no '#### n' final line")
  reasoning, _, final = answer.rpartition("####")
  gold = final.strip().replace(",", "").rstrip(".")
  if not gold:
    raise RowError("empty final answer after '####'")
  reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
  solution = f"{reasoning}\nThe answer is \\boxed{{{gold}}}."
  return {"id": f"gsm8k-{line_no}", "question": question, "solution": solution,
          "answer": gold, "family": "gsm8k", "kind": "word_problem", "level": 0}


def parse_math_row(row: dict, line_no: int) -> Example:
  problem, solution = _field(row, "problem"), _field(row, "solution")
  gold = row.get("answer")
  if not isinstance(gold, str) or not gold.strip():
    gold = last_boxed(solution)
  if gold is None or not gold.strip():
    raise RowError("no 'answer' field and no \\boxed{} in the solution")
  level = row.get("level", 0)
  if isinstance(level, str):
    match = re.search(r"\d+", level)
    level = int(match.group()) if match else 0
  return {"id": str(row.get("unique_id") or f"math-{line_no}"), "question": problem,
          "solution": solution, "answer": gold.strip(), "family": "math",
          "kind": str(row.get("subject", "")), "level": int(level)}


def _check_encodable(example: Example) -> Example:
  """JSON escapes can spell lone surrogates ("\\ud800"), which no UTF-8 writer accepts."""
  for key, value in example.items():
    if isinstance(value, str):
      try:
        value.encode("utf-8")
      except UnicodeEncodeError as e:
        raise RowError(f"field {key!r} is not valid Unicode (a lone surrogate escape)") from e
  return example


MAX_ROW_BYTES = 1 << 20  # a longer row is skipped unparsed (a 50 MB row made builds 10x slower)


def _parse_lines(path: str, parse_row: Callable[[dict, int], Example]):
  """Yields (line number, example or None, reason) for every non-blank line."""
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        if len(raw) > MAX_ROW_BYTES:
          raise RowError(f"row of {len(raw):,} bytes exceeds the {MAX_ROW_BYTES:,}-byte cap")
        # utf-8-sig: a byte-order mark before the first row is not part of it.
        row = json.loads(raw.decode("utf-8-sig"))
        if not isinstance(row, dict):
          raise RowError("row is not a JSON object")
        yield line_no, _check_encodable(parse_row(row, line_no)), ""
      except (ValueError, RecursionError) as e:  # JSON, UTF-8 and row errors are ValueErrors
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        yield line_no, None, f"{type(e).__name__}: {reason}"


def read_jsonl(path: str, parse_row: Callable[[dict, int], Example]
               ) -> tuple[list[Example], list[tuple[int, str]]]:
  """(examples, skipped) where skipped lists (1-based line number, reason).

  A row is skipped, never fatal, when it is not UTF-8 or not JSON, when Python's
  json refuses it (an integer of more than 4,300 digits: ValueError; arrays
  nested past the recursion limit: RecursionError), when it is longer than
  MAX_ROW_BYTES, or when it lacks what its parser needs.
  """
  examples, skipped = [], []
  for line_no, example, reason in _parse_lines(path, parse_row):
    if example is None:
      skipped.append((line_no, reason))
    else:
      examples.append(example)
  for line_no, reason in skipped:
    logging.warning("%s:%d skipped: %s", path, line_no, reason)
  return examples, skipped


def count_valid_rows(path: str, parse_row: Callable[[dict, int], Example]) -> int:
  """How many rows of `path` read_jsonl would keep (nothing logged)."""
  return sum(example is not None for _, example, _ in _parse_lines(path, parse_row))


def normalized_question(text: str) -> str:
  """A question's text for finding copies: case, punctuation and spacing ignored."""
  return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def drop_test_overlap(train: list[Example], test: list[Example]
                      ) -> tuple[list[Example], list[str]]:
  """(train without the examples whose question is also a test question, the ids of
  those dropped): a test problem seen in training would be reported as held out."""
  held_out = {normalized_question(e["question"]) for e in test}
  kept, dropped = [], []
  for e in train:
    if normalized_question(e["question"]) in held_out:
      dropped.append(e["id"])
    else:
      kept.append(e)
  return kept, dropped
