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


def read_jsonl(path: str, parse_row: Callable[[dict, int], Example]
               ) -> tuple[list[Example], list[tuple[int, str]]]:
  """(examples, skipped) where skipped lists (1-based line number, reason).

  A row is skipped, never fatal, when it is not UTF-8 or not JSON, when Python's
  json refuses it (an integer of more than 4,300 digits: ValueError; arrays
  nested past the recursion limit: RecursionError), or when it lacks what its
  parser needs.
  """
  examples, skipped = [], []
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        row = json.loads(raw.decode("utf-8"))
        if not isinstance(row, dict):
          raise RowError("row is not a JSON object")
        examples.append(_check_encodable(parse_row(row, line_no)))
      except (ValueError, RecursionError) as e:  # JSON, UTF-8 and row errors are ValueErrors
        reason = str(e).splitlines()[0][:200] if str(e) else ""
        skipped.append((line_no, f"{type(e).__name__}: {reason}"))
  for line_no, reason in skipped:
    logging.warning("%s:%d skipped: %s", path, line_no, reason)
  return examples, skipped
