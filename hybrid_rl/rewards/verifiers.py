"""Answer checkers: an equivalence verifier (math-verify) and a strict rule verifier.

Both return a `Verdict(correct, status, extracted)` with status one of
  ok        the response had an answer and it was judged;
  no_answer nothing to extract (no \\boxed{}, or an empty one);
  timeout   the check ran past its time bound (counts as incorrect);
  error     the checker raised or its worker crashed (counts as incorrect).

`equivalence_verify` is the oracle: math-verify parses gold and response with
sympy and decides mathematical equivalence (1/2 == 0.5 == \\dfrac12), after
Unicode digits are normalized (NFKC, then every decimal digit to ASCII: `７２`
and `٧٢` read 72). Against a numeric gold one rule holds (`numeric_answer_rule`):
the final answer, the last side of an `=` chain, scores when it is a number equal
to the gold, or a closed form without free symbols (power, root, factorial,
scientific notation) whose exact value equals it; a sum, difference, product or
`\\div` of written numbers is arithmetic left undone and never scores, whatever
its value. Without it math-verify evaluates "46 + 44" to 90, and GRPO on SmolLM2
learned within 15 steps to restate a question's arithmetic as its final answer,
scoring 100% held-out without computing anything (results/smollm2_onestep). The
verifier never sees the question, so the rule cannot ask whether the operands are
the question's: no grader of GSM8K or MATH accepts unfinished arithmetic as an
answer either way.
`strict_verify` is the sparse, low-recall checker of HERO's hard-to-verify
regime: the last \\boxed{} must equal the gold string after light
normalization (spaces, \\left/\\right, \\dfrac, $, a trailing period).

These functions do not bound their own time; `VerifierPool` does, by running
them in worker processes that are replaced when they hang or crash.
"""
import dataclasses
import fractions
import logging
import re
import unicodedata

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


def normalize_digits(text: str) -> str:
  """NFKC (fullwidth and other compatibility forms), then every Unicode decimal digit
  (Arabic-Indic, Devanagari, ...) as its ASCII digit."""
  text = unicodedata.normalize("NFKC", text)
  if text.isascii():
    return text
  return "".join(str(unicodedata.decimal(c)) if unicodedata.decimal(c, None) is not None
                 else c for c in text)


_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\{(\d+)\}")


def _repeating_as_fraction(match: re.Match) -> str:
  """0.1\\overline{6} -> \\frac{1}{6}: sympy has no notation for a repeating decimal."""
  sign, whole, fixed, period = match.groups()
  q = fractions.Fraction(int(whole + fixed + period or "0") - int(whole + fixed or "0"),
                         10 ** len(fixed) * (10 ** len(period) - 1))
  return f"{sign}\\frac{{{q.numerator}}}{{{q.denominator}}}"


def _is_closed_form(expr) -> bool:
  """A number, or a power / root / factorial / scientific notation of numbers: no free
  symbol and no sum or product of written numbers (arithmetic left undone)."""
  import sympy  # pylint: disable=g-import-not-at-top
  if getattr(expr, "is_Number", False):
    return True
  if not isinstance(expr, sympy.Basic) or expr.free_symbols or isinstance(expr, sympy.Add):
    return False
  if isinstance(expr, sympy.Mul):
    factors = [a for a in expr.args if a != -1]  # -2^{3} is Mul(-1, 2^3): a sign
    if len(factors) == 1:
      return _is_closed_form(factors[0])
    scientific = (len(factors) == 2 and factors[0].is_Number and isinstance(factors[1], sympy.Pow)
                  and factors[1].base == 10 and factors[1].exp.is_Integer)
    return scientific
  return all(_is_closed_form(a) for a in expr.args)


def numeric_answer_rule(answer: str, gold_parsed: list) -> bool:
  """Whether `answer` (the extracted final answer's text) scores against a numeric gold:
  the last side of its `=` chain, `%` dropped, is a closed form (`_is_closed_form`) whose
  exact value equals the gold."""
  from math_verify import parse, verify  # pylint: disable=g-import-not-at-top
  final = answer.split("=")[-1].replace("\\%", "").replace("%", "").strip().rstrip(".")
  if not final or "\\div" in final:
    return False
  final = _REPEATING.sub(_repeating_as_fraction, final)
  parsed = parse(f"$\\boxed{{{final}}}$", parsing_timeout=None)
  if not parsed or not _is_closed_form(parsed[0]):
    return False
  return bool(verify(gold_parsed, parsed, timeout_seconds=None))


_CHAIN_TAIL = re.compile(r"(?:\s*=\s*[^\s=]+(?:\s*[-+*/^]\s*[^\s=]+)*)+")


def _statement_of(text: str, extracted: str) -> str:
  """math-verify's unboxed extraction with the `=` chain that follows it in `text`
  ("2 * 45 = 90" where it extracted "2 * 45"): what the rule takes the last side of."""
  start = text.rfind(extracted)
  if start < 0:
    return extracted
  tail = _CHAIN_TAIL.match(text, start + len(extracted))
  return extracted + (tail.group(0) if tail else "")


def equivalence_verify(response: str | bytes, gold: str) -> Verdict:
  """math-verify equivalence of the response's final answer and the gold answer; against
  a numeric gold, `numeric_answer_rule`."""
  from math_verify import parse, verify  # pylint: disable=g-import-not-at-top
  text = normalize_digits(as_text(response)[-MAX_RESPONSE_CHARS:])
  gold = normalize_digits(gold)
  boxed = last_boxed(text)
  if boxed is not None and not boxed.strip():
    return Verdict(False, "no_answer", boxed)
  # Timeouts are enforced by the pool (math-verify's own use signals, which
  # only work in a main thread); 0/None disables them here.
  gold_parsed = parse(f"$\\boxed{{{gold}}}$", parsing_timeout=None)
  target = f"\\boxed{{{boxed}}}" if boxed is not None else text
  answer = parse(target, parsing_timeout=None)
  if boxed is not None and _REPEATING.search(boxed):
    answer = answer or [boxed]  # math-verify keeps a repeating decimal as a bare string
  if not answer:
    return Verdict(False, "no_answer", boxed)
  extracted = boxed if boxed is not None else str(answer[-1])
  if bool(gold_parsed) and getattr(gold_parsed[0], "is_Number", False):
    statement = extracted if boxed is not None else _statement_of(text, extracted)
    return Verdict(numeric_answer_rule(statement, gold_parsed), "ok", extracted)
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
