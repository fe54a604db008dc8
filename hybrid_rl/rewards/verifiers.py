"""Answer checkers: an equivalence verifier (math-verify) and a strict rule verifier.

Both return a `Verdict(correct, status, extracted)` with status one of
  ok        the response had an answer and it was judged;
  no_answer nothing to extract (no \\boxed{}, or an empty one);
  timeout   the check ran past its time bound (counts as incorrect);
  error     the checker raised or its worker crashed (counts as incorrect).

`equivalence_verify` is the oracle: math-verify parses gold and response with
sympy and decides mathematical equivalence (1/2 == 0.5 == \\dfrac12). Where the
gold is a number, an answer that math-verify extracts as an expression ("46 + 44",
"4 * 30" from "4 * 30 = 180") is judged by the last number written instead:
math-verify evaluates the expression to its value, and GRPO on SmolLM2 learned
within 15 steps to restate a question's arithmetic as its final answer, scoring
100% held-out without computing anything (results/smollm2_onestep).
`strict_verify` is the sparse, low-recall checker of HERO's hard-to-verify
regime: the last \\boxed{} must equal the gold string after light
normalization (spaces, \\left/\\right, \\dfrac, $, a trailing period).

These functions do not bound their own time; `VerifierPool` does, by running
them in worker processes that are replaced when they hang or crash.
"""
import dataclasses
import logging
import re

# math-verify warns on every call that its own (signal-based) timeouts are off;
# the pool bounds time instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)

STATUSES = ("ok", "no_answer", "timeout", "error")
MAX_RESPONSE_CHARS = 20_000  # longer responses are judged on their tail


@dataclasses.dataclass(frozen=True)
class Verdict:
  correct: bool
  status: str
  extracted: str | None = None


def as_text(response: str | bytes) -> str:
  """Responses may arrive as bytes that are not valid UTF-8; decode leniently."""
  if isinstance(response, bytes):
    return response.decode("utf-8", errors="replace")
  return response


def last_boxed(text: str) -> str | None:
  """Content of the last \\boxed{...} / \\fbox{...} with balanced braces, or None.

  Linear time (one pass pairs every brace), so it is safe on adversarial text
  outside the time-bounded pool.
  """
  starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
  if not starts:
    return None
  closing, open_braces = {}, []  # position of "{" -> position of its "}"
  for m in re.finditer(r"[{}]", text):
    if m.group() == "{":
      open_braces.append(m.start())
    elif open_braces:
      closing[open_braces.pop()] = m.start()
  for start in reversed(starts):
    if start - 1 in closing:
      return text[start:closing[start - 1]]
  return None


_STRICT_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\$|\s")


def normalize_strict(answer: str) -> str:
  text = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  text = _STRICT_DROP.sub("", text)
  return text.rstrip(".")


def strict_verify(response: str | bytes, gold: str) -> Verdict:
  answer = last_boxed(as_text(response)[-MAX_RESPONSE_CHARS:])
  if answer is None or not answer.strip():
    return Verdict(False, "no_answer", answer)
  return Verdict(normalize_strict(answer) == normalize_strict(gold), "ok", answer)


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def _is_number(parsed: list) -> bool:
  """math-verify's parse result is a plain number (sympy Integer, Rational, Float), not an
  expression such as 46 + 44, 2^{3} or 5\\% that evaluates to one."""
  return bool(parsed) and bool(getattr(parsed[0], "is_Number", False))


def equivalence_verify(response: str | bytes, gold: str) -> Verdict:
  """math-verify equivalence of the response's final answer and the gold answer."""
  from math_verify import parse, verify  # pylint: disable=g-import-not-at-top
  text = as_text(response)[-MAX_RESPONSE_CHARS:]
  boxed = last_boxed(text)
  if boxed is not None and not boxed.strip():
    return Verdict(False, "no_answer", boxed)
  # Timeouts are enforced by the pool (math-verify's own use signals, which
  # only work in a main thread); 0/None disables them here.
  gold_parsed = parse(f"$\\boxed{{{gold}}}$", parsing_timeout=None)
  target = f"\\boxed{{{boxed}}}" if boxed is not None else text
  answer = parse(target, parsing_timeout=None)
  if not answer:
    return Verdict(False, "no_answer", boxed)
  extracted = boxed if boxed is not None else str(answer[-1])
  if _is_number(gold_parsed) and not _is_number(answer):
    # An expression whose value may be the gold: what counts is the number written last.
    numbers = _NUMBER.findall(target)
    if not numbers:
      return Verdict(False, "ok", extracted)
    extracted = numbers[-1]
    answer = parse(f"${extracted}$", parsing_timeout=None)
  correct = bool(verify(gold_parsed, answer, timeout_seconds=None))
  return Verdict(correct, "ok", extracted)


VERIFIERS = {"equivalence": equivalence_verify, "strict": strict_verify}

_INTEGER = re.compile(r"\s*(-?)0*(\d+)\s*", re.ASCII)
_BOXED_AT = re.compile(r"\\(?:boxed|fbox)\s*\{([^{}]*)\}")


def _integer_value(match: re.Match) -> str:
  """Canonical digits of an _INTEGER match: no leading zeros, no sign on zero."""
  return ("" if match.group(2) == "0" else match.group(1)) + match.group(2)


def integer_verdict(kind: str, response: str | bytes, gold: str) -> Verdict | None:
  """The verdict of VERIFIERS[kind] when gold and the last \\boxed{} are plain
  integers, else None.

  Integer answers (the synthetic task, GSM8K) need no sympy: this runs in
  linear time in the caller's process and saves a round trip to a worker.
  """
  gold_match = _INTEGER.fullmatch(gold)
  if gold_match is None:
    return None
  text = as_text(response)[-MAX_RESPONSE_CHARS:]
  # The last "\boxed{" opening is what last_boxed() returns when its braces close.
  box = _BOXED_AT.match(text, max(text.rfind("\\boxed"), text.rfind("\\fbox"), 0))
  if box is None:
    return None
  answer = box.group(1)
  answer_match = _INTEGER.fullmatch(answer)
  if answer_match is None:
    return None
  if kind == "strict":
    return Verdict(normalize_strict(answer) == normalize_strict(gold), "ok", answer)
  return Verdict(_integer_value(answer_match) == _integer_value(gold_match), "ok", answer)
