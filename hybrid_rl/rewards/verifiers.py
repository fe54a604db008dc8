"""Answer checkers: an equivalence verifier (math-verify) and a strict rule verifier.

Both return a `Verdict(correct, status, extracted)` with status one of
  ok        the response had an answer and it was judged;
  no_answer nothing to extract (no \\boxed{}, or an empty one);
  timeout   the check ran past its time bound (counts as incorrect);
  error     the checker raised or its worker crashed (counts as incorrect).

`equivalence_verify` is the oracle: math-verify parses gold and response with
sympy and decides mathematical equivalence (1/2 == 0.5 == \\dfrac12), after
Unicode digits are normalized (NFKC, then every decimal digit to ASCII: `７２`
and `٧٢` read 72). Against a numeric gold (one whose value is rational, however
written) one rule holds for every operator alike (`numeric_answer_rule`): the final
answer scores only when written as a number equal to the gold (an integer or decimal,
a fraction in lowest terms or mixed number of a non-integer, scientific notation, a
repeating decimal, a percent where the gold is one); anything that still needs
evaluating never scores, an equation only when all its sides are that value, and every
\\boxed{} of a response is a final answer that must score (a hedge never does). Without
it math-verify evaluates "46 + 44" to 90, and GRPO on SmolLM2 learned within 15 steps
to restate a question's arithmetic as its final answer, scoring 100% held-out without
computing anything (results/smollm2_onestep). The verifier never sees the question, so
the rule cannot ask whether the operands are the question's: no grader of GSM8K or
MATH accepts unfinished arithmetic as an answer either way.
`strict_verify` is the sparse, low-recall checker of HERO's hard-to-verify
regime: every \\boxed{} must equal the gold string after light normalization
(spaces, \\left/\\right, \\dfrac, $, a trailing period).

These functions do not bound their own time; `VerifierPool` does, by running
them in worker processes that are replaced when they hang or crash.
"""
import dataclasses
import fractions
import logging
import math
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
  """The last \\boxed{} equals the gold string after light normalization, and so does
  every other box (a second answer is a hedge)."""
  text = as_text(response)[-MAX_RESPONSE_CHARS:]
  answer = last_boxed(text)
  if answer is None or not answer.strip():
    return Verdict(False, "no_answer", answer)
  target = normalize_strict(gold)
  return Verdict(all(normalize_strict(b) == target for b in all_boxed(text)), "ok", answer)


def normalize_digits(text: str) -> str:
  """NFKC (fullwidth and other compatibility forms), then every Unicode decimal digit
  (Arabic-Indic, Devanagari, ...) as its ASCII digit."""
  text = unicodedata.normalize("NFKC", text)
  if text.isascii():
    return text
  return "".join(str(unicodedata.decimal(c)) if unicodedata.decimal(c, None) is not None
                 else c for c in text)


_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\{(\d+)\}")


def _repeating_value(match: re.Match) -> fractions.Fraction:
  """0.1\\overline{6} -> 1/6: sympy has no notation for a repeating decimal."""
  sign, whole, fixed, period = match.groups()
  q = fractions.Fraction(int(whole + fixed + period or "0") - int(whole + fixed or "0"),
                         10 ** len(fixed) * (10 ** len(period) - 1))
  return -q if sign else q


# ------------------------------------------------------------ numbers as written

_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*"
                      r"\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad\b|~|\\left|\\right|\\displaystyle")
_CURRENCY = re.compile(r"\\\$|\$|\\euro\b|[€£¥]")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z\s]*?(?:\bis|\bare|\bequals|:)\s+")
_UNITS = re.compile(r"(?:\s+[A-Za-z]+(?:/[A-Za-z]+)?(?:\^\{?\d\}?)?\.?)+$")
_DECIMAL = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+"
_PLAIN = re.compile(rf"(?:{_DECIMAL})")
_FRACTION = re.compile(r"([-+]?)(?:(\d+\s*)?(?:\\[dt]?frac\s*\{\s*([-+]?\d+)\s*\}\s*\{\s*(\d+)\s*\}"
                       r"|\\[dt]?frac\s*(\d)(\d))|(\d+)\s*/\s*(\d+))")
_SCIENTIFIC = re.compile(rf"({_DECIMAL})\s*(?:(?:\\times|\\cdot|\*|×)\s*10\s*\^\s*\{{?\s*"
                         r"([-+]?\d+)\s*\}?|[eE]([-+]?\d+))")
_LABEL = re.compile(r"^(?:\\?[A-Za-z]+(?:_\{?\w+\}?)?(?:\([A-Za-z,\s]*\))?\s*)+$")


def _plain_number(text: str) -> fractions.Fraction | None:
  """The value of text written as a number (`numeric_answer_rule`'s forms, the percent
  sign excluded), or None."""
  text = text.strip()
  match = _REPEATING.fullmatch(text)
  if match:
    return _repeating_value(match)
  if _PLAIN.fullmatch(text):
    return fractions.Fraction(text.replace(",", ""))
  match = _SCIENTIFIC.fullmatch(text)
  if match:
    mantissa, exponent = match.group(1).replace(",", ""), match.group(2) or match.group(3)
    return fractions.Fraction(mantissa) * fractions.Fraction(10) ** int(exponent)
  match = _FRACTION.fullmatch(text)
  if match:
    sign, whole, *parts = match.groups()
    num, den = next((a, b) for a, b in zip(parts[::2], parts[1::2]) if a is not None)
    value = fractions.Fraction(int(num), int(den)) if int(den) else None
    # A fraction is the written form of a non-integer, in lowest terms: 10/2 is a
    # division left undone. A mixed number's fraction is proper (15\frac{39}{40}).
    if (value is None or value.denominator == 1 or math.gcd(abs(int(num)), int(den)) != 1
        or (whole is not None and not 0 < value < 1)):
      return None
    value += int(whole or 0)
    return -value if sign == "-" else value
  return None


def _cleaned(text: str) -> str:
  """An answer's text without typesetting that carries no value: \\text{} wrappers (their
  words kept), spacing, currency, degree marks, $ delimiters and a trailing period."""
  text = text.replace("\u2212", "-").replace("{,}", ",")
  for _ in range(3):  # nested wrappers
    text = _WRAPPER.sub(lambda m: f" {m.group(1)} ", text)
  text = _DEGREES.sub("", _CURRENCY.sub("", _SPACING.sub(" ", text)))
  return re.sub(r"\s+\^", "^", " ".join(text.split())).rstrip(".").strip()


def written_number(text: str) -> tuple[fractions.Fraction, bool] | None:
  """(value, is_percent) of an answer that is one number as written: an integer or
  decimal (thousands commas allowed), a fraction in lowest terms of a non-integer
  (\\frac{a}{b}, a/b, a mixed number 3\\frac{1}{2}), scientific notation, a repeating
  decimal, optionally a percent,
  optionally after words ending in "is" / ":" ("The answer is 5") and before unit
  words ("5 apples", "5 cm^2"); else None."""
  text = _PREFIX.sub("", _cleaned(text))
  for candidate in (text, _UNITS.sub("", text).strip()):
    percent = candidate.endswith("%")
    core = candidate.rstrip("%").rstrip("\\").strip() if percent else candidate
    value = _plain_number(core) if core else None
    if value is not None:
      return value, percent
  return None


def _parsed(text: str) -> list:
  from math_verify import parse  # pylint: disable=g-import-not-at-top
  return parse(f"$\\boxed{{{text}}}$", parsing_timeout=None)


def _rational(parsed: list) -> fractions.Fraction | None:
  """The rational value of math-verify's parse of an expression without free symbols
  (evaluated: the verifier pool bounds its time), else None."""
  expr = parsed[0] if parsed else None
  if not hasattr(expr, "free_symbols") or expr.free_symbols:
    return None
  value = expr.doit()
  if getattr(value, "is_Rational", False):
    return fractions.Fraction(int(value.p), int(value.q))
  return None


def numeric_gold(gold: str) -> tuple[tuple[fractions.Fraction, bool] | None, list | None]:
  """((value, is_percent) of a gold answer whose value is rational, however written
  (`50\\%`, `\\sqrt{49}`, `\\frac{10}{4}`), else None; math-verify's parse of the gold,
  None where the gold is written as a number and needs none)."""
  written = written_number(gold)
  if written is not None:
    return written, None
  parsed = _parsed(gold)
  value = _rational(parsed)
  return (None if value is None else (value, "%" in gold)), parsed


def _side_value(side: str) -> fractions.Fraction | None:
  """The exact value of one side of an equation (a label such as x or \\text{total}
  has none), or None when it is not a closed number."""
  written = written_number(side)
  if written is not None:
    return written[0] / 100 if written[1] else written[0]
  return _rational(_parsed(side))


def numeric_answer_rule(answer: str, gold: tuple[fractions.Fraction, bool]) -> bool:
  """Whether `answer` (one final answer's text) scores against a numeric gold (value,
  is_percent). It scores only when its last `=` side is written as a number
  (`written_number`; a percent only where the gold is one) equal to the gold, and every
  other side is a label (x, \\text{total}) or has that same value: anything that
  still needs evaluating (10/2, 3+4, \\sqrt{49}, \\binom{10}{2}, \\max(45,1)) never
  scores, whatever its operator, and neither does a false equation (6 = 5)."""
  gold_value, gold_percent = gold
  *others, last = _cleaned(answer).split("=")
  written = written_number(last)
  if written is None or (written[1] and not gold_percent) or written[0] != gold_value:
    return False
  exact = gold_value / 100 if written[1] else gold_value
  for side in others:
    side = _cleaned(side)
    if _LABEL.fullmatch(side):
      continue
    if _side_value(side) not in (exact, gold_value):
      return False
  return True


def all_boxed(text: str) -> list[str]:
  """Contents of every \\boxed{...} / \\fbox{...} with balanced braces, in order."""
  closing, open_braces = {}, []
  for m in re.finditer(r"[{}]", text):
    if m.group() == "{":
      open_braces.append(m.start())
    elif open_braces:
      closing[open_braces.pop()] = m.start()
  return [text[m.end():closing[m.end() - 1]] for m in
          re.finditer(r"\\(?:boxed|fbox)\s*\{", text) if m.end() - 1 in closing]


_CHAIN_TAIL = re.compile(r"(?:\s*=\s*[^\s=]+(?:\s*[-+*/^]\s*[^\s=]+)*)+")


def _statement_of(text: str, extracted: str) -> str:
  """math-verify's unboxed extraction with the `=` chain that follows it in `text`
  ("2 * 45 = 90" where it extracted "2 * 45"): what the rule takes the last side of."""
  start = text.rfind(extracted)
  if start < 0:
    return extracted
  tail = _CHAIN_TAIL.match(text, start + len(extracted))
  return extracted + (tail.group(0) if tail else "")


def _one_answer_scores(answer: str, gold: str, gold_number, gold_parsed) -> bool:
  """Whether one final answer (a box's content, or the statement math-verify extracted
  from unboxed text) scores against the gold."""
  if normalize_strict(answer) == normalize_strict(gold):
    return True  # the gold as written (what the strict checker accepts)
  if gold_number is not None:
    return numeric_answer_rule(answer, gold_number)
  from math_verify import parse, verify  # pylint: disable=g-import-not-at-top
  parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
  return bool(parsed) and bool(verify(gold_parsed, parsed, timeout_seconds=None))


def equivalence_verify(response: str | bytes, gold: str) -> Verdict:
  """math-verify equivalence of the response's final answer and the gold answer; against
  a numeric gold, `numeric_answer_rule`. Every \\boxed{} of the response is a final
  answer and must score: a second, different answer (\\boxed{5} or \\boxed{6}) is a
  hedge and never scores."""
  from math_verify import parse  # pylint: disable=g-import-not-at-top
  text = normalize_digits(as_text(response)[-MAX_RESPONSE_CHARS:])
  gold = normalize_digits(gold)
  boxes = all_boxed(text)
  if boxes and not all(b.strip() for b in boxes):
    return Verdict(False, "no_answer", boxes[-1])
  # Timeouts are enforced by the pool (math-verify's own use signals, which
  # only work in a main thread); 0/None disables them here.
  gold_number, gold_parsed = numeric_gold(gold)
  if boxes:
    correct = all(_one_answer_scores(b, gold, gold_number, gold_parsed) for b in boxes)
    return Verdict(correct, "ok", boxes[-1])
  answer = parse(text, parsing_timeout=None)
  if not answer:
    return Verdict(False, "no_answer", None)
  extracted = str(answer[-1])
  statement = _statement_of(text, extracted)
  return Verdict(_one_answer_scores(statement, gold, gold_number, gold_parsed), "ok",
                 extracted)


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
  if text.count("\\boxed") + text.count("\\fbox") != 1:
    return None  # several answers are judged whole, by the verifier itself
  # The "\boxed{" opening is what last_boxed() returns when its braces close.
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
