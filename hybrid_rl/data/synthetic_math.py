"""Procedurally generated math problems with worked solutions (no download).

Two families:
  easy: multi-step integer arithmetic and word problems; the answer is an
    integer with one written form, so a strict string checker is reliable.
  hard: problems whose correct answers have many equivalent surface forms.
    The gold answer is canonical; each reference solution ends in a randomly
    chosen equivalent form, so a policy cold-started on them writes correct
    answers that a strict checker rejects and an equivalence checker accepts
    (HERO's hard-to-verify regime). Two kinds of hard family (`hard_family`):
      solve  fractions, mixed numbers, radicals, inequalities (intervals), roots
             (sets of values) and polynomial expansions: hard to verify and,
             for a small model, hard to solve as well;
      forms  the easy family's word problems, their answers written with the
             unit ("12\\text{ apples}") or with decimal zeros ("12.0"): as
             hard to solve as the easy family, hard only to verify, the
             property HERO's hard-to-verify problems have; the easy family is
             then the arithmetic chains alone.

Difficulty `level` in 1..3 scales operand size and the number of steps; the
config's `max_level`, `operand_scale` and `chain_ops` tune how hard the task is.

Every generator is a pure function of a `random.Random`; splits are assigned
by a hash of the question text, so no problem appears in two splits. The train
split is a stream (its size is how many draws; questions may repeat), so RL and
SFT can see fresh problems for as long as they run.
"""
import dataclasses
import fractions
import hashlib
import math
import random
import re
from typing import Callable, Iterator

from hybrid_rl import errors

Fraction = fractions.Fraction

FAMILIES = ("easy", "hard")
EASY_KINDS = ("arith_chain", "word_shop", "word_groups")
HARD_KINDS = ("fraction_sum", "mixed_number", "radical", "inequality", "quadratic_roots",
              "expand")
FORMS_KINDS = ("word_shop_forms", "word_groups_forms")
# hard_family -> (easy kinds, hard kinds). With "forms" the word problems are the hard
# family's alone: a policy cannot tell an easy word problem from a hard one, and would
# write the hard family's forms on both (a strict recall of 61% on easy problems in
# the default preset's first run).
HARD_FAMILIES = {"solve": (EASY_KINDS, HARD_KINDS), "forms": (("arith_chain",), FORMS_KINDS)}


@dataclasses.dataclass(frozen=True)
class Problem:
  question: str
  solution: str  # worked steps ending in "The answer is \boxed{...}."
  answer: str  # canonical gold answer (LaTeX)
  family: str  # "easy" | "hard"
  kind: str
  level: int
  forms: tuple[str, ...] = ()  # equivalent written forms of the answer, canonical first


# ---------------------------------------------------------------- answer forms

def _frac_latex(q: Fraction) -> str:
  if q.denominator == 1:
    return str(q.numerator)
  sign = "-" if q < 0 else ""
  return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def fraction_forms(q: Fraction) -> list[str]:
  """Equivalent written forms of a rational; the first is canonical."""
  if q.denominator == 1:
    return [str(q.numerator)]
  sign = "-" if q < 0 else ""
  n, d = abs(q.numerator), q.denominator
  # Every form is one the equivalence verifier's numeric rule accepts (in lowest terms).
  forms = [_frac_latex(q), f"{sign}{n}/{d}", f"{sign}\\dfrac{{{n}}}{{{d}}}"]
  if _terminates(d):
    forms.append(_decimal(q))
  if n > d:
    whole, rest = divmod(n, d)
    forms.append(f"{sign}{whole}\\frac{{{rest}}}{{{d}}}")
  return forms


def _terminates(d: int) -> bool:
  while d % 2 == 0:
    d //= 2
  while d % 5 == 0:
    d //= 5
  return d == 1


def _decimal(q: Fraction) -> str:
  text = f"{float(q):.6f}".rstrip("0").rstrip(".")
  return text


def _sqrt_parts(n: int) -> tuple[int, int]:
  """n -> (a, b) with sqrt(n) = a * sqrt(b), b square-free."""
  a, b = 1, n
  for f in range(int(math.isqrt(n)), 1, -1):
    if n % (f * f) == 0:
      return f, n // (f * f)
  return a, b


def radical_forms(a: int, b: int) -> list[str]:
  """Forms of a*sqrt(b) (b square-free > 1); the first is canonical."""
  # \sqrt without braces takes one token: \sqrt11 is sqrt(1) * 1, so only b < 10 has it.
  bare = [f"\\sqrt{b}"] if b < 10 else []
  if a == 1:
    return [f"\\sqrt{{{b}}}", *bare, f"1\\sqrt{{{b}}}"]
  return [f"{a}\\sqrt{{{b}}}", *[f"{a}{x}" for x in bare], f"{a}*\\sqrt{{{b}}}",
          f"\\sqrt{{{a * a * b}}}", f"{a} \\sqrt{{{b}}}"]


def interval_forms(bound: Fraction, greater: bool, inclusive: bool) -> list[str]:
  b = _frac_latex(bound)
  alt = fraction_forms(bound)[1] if bound.denominator != 1 else f"{bound.numerator}.0"
  if greater:
    left = "[" if inclusive else "("
    return [f"{left}{b}, \\infty)", f"{left}{b},\\infty)", f"{left}{b}, +\\infty)",
            f"x \\in {left}{b}, \\infty)", f"{left}{alt}, \\infty)"]
  right = "]" if inclusive else ")"
  return [f"(-\\infty, {b}{right}", f"(-\\infty,{b}{right}", f"x \\in (-\\infty, {b}{right}",
          f"(-\\infty, {alt}{right}"]


def unit_forms(value: int, unit: str) -> list[str]:
  """Forms of a count of `unit` (canonical first): with the unit as LaTeX text, or with
  decimal zeros. An equivalence checker reads each as the number; a string match
  accepts only the first. (A bare "12 books" is not among them: math-verify reads
  some such words as products of symbols.)"""
  return [str(value), f"{value}\\text{{ {unit}}}", f"{value} \\text{{{unit}}}", f"{value}.0",
          f"{value}.00"]


def set_forms(values: list[int]) -> list[str]:
  lo, hi = sorted(values)
  return [f"\\{{{lo}, {hi}\\}}", f"{lo}, {hi}", f"{hi}, {lo}", f"\\{{{hi},{lo}\\}}",
          f"x={lo}, x={hi}"]


def _poly_latex(coeffs: list[int], descending: bool = True, spaced: bool = True) -> str:
  """coeffs[i] multiplies x^i."""
  terms = []
  order = range(len(coeffs) - 1, -1, -1) if descending else range(len(coeffs))
  for power in order:
    c = coeffs[power]
    if c == 0:
      continue
    mag = abs(c)
    body = {0: f"{mag}", 1: "x" if mag == 1 else f"{mag}x"}.get(
        power, f"x^{power}" if mag == 1 else f"{mag}x^{power}")
    terms.append(("-" if c < 0 else "+", body))
  sep = " " if spaced else ""
  text = ""
  for i, (sign, body) in enumerate(terms):
    if i == 0:
      text = ("-" if sign == "-" else "") + body
    else:
      text += f"{sep}{sign}{sep}{body}"
  return text or "0"


def poly_forms(coeffs: list[int]) -> list[str]:
  canonical = _poly_latex(coeffs)
  return [canonical, _poly_latex(coeffs, spaced=False), _poly_latex(coeffs, descending=False),
          re.sub(r"\^(\d+)", r"^{\1}", canonical)]  # x^{2}: equal, but not to a string match


# ------------------------------------------------------------------ generators

def _boxed_end(form: str) -> str:
  return f"The answer is \\boxed{{{form}}}."


def direct_solution(solution: str) -> str:
  """The solution's final sentence only: the answer without the working."""
  return solution[solution.rindex("The answer is "):]


def _operand(rng: random.Random, level: int, scale: int) -> int:
  return rng.randint(1, scale * (4 ** (level - 1)) + 1)


def gen_arith_chain(rng: random.Random, level: int, scale: int, ops: int = 0) -> Problem:
  """a op b op c ... evaluated left to right with explicit intermediate steps; `ops`
  operations (0: level + 1)."""
  n_ops = ops or level + 1
  value = _operand(rng, level, scale)
  expr, steps = str(value), []
  for _ in range(n_ops):
    op = rng.choice("+-*" if level > 1 else "+-")
    b = rng.randint(2, 9) if op == "*" else _operand(rng, level, scale)
    new = {"+": value + b, "-": value - b, "*": value * b}[op]
    steps.append(f"{value} {op} {b} = {new}.")
    expr = f"({expr}) {op} {b}" if op == "*" and len(steps) > 1 else f"{expr} {op} {b}"
    value = new
  question = f"Compute {expr}."
  return Problem(question, " ".join(steps) + " " + _boxed_end(str(value)), str(value),
                 "easy", "arith_chain", level)


_NAMES = ("Ann", "Ben", "Cal", "Dee", "Eva", "Finn", "Gus", "Hana")
_ITEMS = ("apples", "pens", "cards", "books", "shells", "coins")


def _trades(rng: random.Random, value: int, n: int, level: int,
            scale: int) -> tuple[str, list[str], int]:
  """n purchases and gifts from a stock of `value`, alternating from a purchase:
  ("buys 7 more, gives away 3 and buys 4 more", one step per trade, the stock after)."""
  phrases, steps = [], []
  for i in range(n):
    if i % 2 == 0:
      b = _operand(rng, level, scale)
      phrases.append(f"buys {b} more")
      steps.append(f"{value} + {b} = {value + b}.")
      value += b
    else:
      b = rng.randint(1, value)
      phrases.append(f"gives away {b}")
      steps.append(f"{value} - {b} = {value - b}.")
      value -= b
  return (", ".join(phrases[:-1]) + " and " + phrases[-1] if n > 1 else phrases[0]), steps, value


def gen_word_shop(rng: random.Random, level: int, scale: int, ops: int = 0) -> Problem:
  """`ops` trades (0: two, a purchase then a gift)."""
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  a = _operand(rng, level, scale)
  if ops:
    trades, steps, answer = _trades(rng, a, ops, level, scale)
    question = f"{name} has {a} {item}. {name} {trades}. How many {item} does {name} have now?"
  else:  # the original wording, kept so that existing data stays unchanged
    b = _operand(rng, level, scale)
    c = rng.randint(1, a + b)
    question = (f"{name} has {a} {item}. {name} buys {b} more and then gives away {c}. "
                f"How many {item} does {name} have now?")
    steps = [f"{a} + {b} = {a + b}.", f"{a + b} - {c} = {a + b - c}."]
    answer = a + b - c
  if level >= 3 and not ops:
    k = rng.randint(2, 4)
    question = question[:-len("have now?")] + f"have now if the total is then multiplied by {k}?"
    steps.append(f"{answer} * {k} = {answer * k}.")
    answer *= k
  return Problem(question, " ".join(steps) + " " + _boxed_end(str(answer)), str(answer),
                 "easy", "word_shop", level)


def gen_word_groups(rng: random.Random, level: int, scale: int, ops: int = 0) -> Problem:
  """A product and a remainder, then `ops` - 2 trades (ops 0: none); ops 1: the product."""
  name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
  groups, per = rng.randint(2, 2 + 3 * level), rng.randint(2, 2 + scale * level)
  if ops == 1:
    question = (f"{name} packs {groups} boxes with {per} {item} each. "
                f"How many {item} are there in total?")
    return Problem(question, f"{groups} * {per} = {groups * per}. " + _boxed_end(str(groups * per)),
                   str(groups * per), "easy", "word_groups", level)
  extra = _operand(rng, level, scale)
  question = f"{name} packs {groups} boxes with {per} {item} each and has {extra} {item} left over."
  steps = [f"{groups} * {per} = {groups * per}.", f"{groups * per} + {extra} = {groups * per + extra}."]
  answer = groups * per + extra
  if ops > 2:
    trades, more_steps, answer = _trades(rng, answer, ops - 2, level, scale)
    question += f" Then {name} {trades}. How many {item} does {name} have now?"
    steps += more_steps
  else:
    question += f" How many {item} are there in total?"
  return Problem(question, " ".join(steps) + " " + _boxed_end(str(answer)), str(answer),
                 "easy", "word_groups", level)


# The hard kinds draw from spaces of a few hundred to a few thousand questions at
# level 1 (scale 9), so that validation and test, which hold unique questions, keep
# every kind's share instead of exhausting the small ones (the train stream would
# then repeat questions they never hold and memorization would pass for skill).

def _small_fraction(rng: random.Random, level: int, scale: int) -> Fraction:
  d = rng.choice((2, 3, 4, 5, 6, 8, 10)[: 3 + 2 * level])
  return Fraction(rng.randint(1, max(d * level, scale + 1)), d)


def gen_fraction_sum(rng: random.Random, level: int, scale: int) -> Problem:
  a, b = _small_fraction(rng, level, scale), _small_fraction(rng, level, scale)
  op = rng.choice("+-")
  result = a + b if op == "+" else a - b
  common = a.denominator * b.denominator // math.gcd(a.denominator, b.denominator)
  an, bn = a.numerator * common // a.denominator, b.numerator * common // b.denominator
  rn = an + bn if op == "+" else an - bn
  question = f"Compute {a} {op} {b}."
  steps = [f"{a} {op} {b} = {an}/{common} {op} {bn}/{common} = {rn}/{common}."]
  if result.denominator != common:
    steps.append(f"{rn}/{common} = {result}.")
  return _hard(rng, question, steps, fraction_forms(result), "fraction_sum", level)


def gen_mixed_number(rng: random.Random, level: int, scale: int) -> Problem:
  d = rng.choice((2, 3, 4, 5, 8)[: 3 + level])
  whole, rest = rng.randint(1, scale * level), rng.randint(1, d - 1)
  k = rng.randint(2, 2 + scale // 3)
  value = (whole + Fraction(rest, d)) * k
  question = f"Compute {k} times {whole} and {rest}/{d}."
  steps = [f"{whole} and {rest}/{d} = {whole * d + rest}/{d}.",
           f"{k} * {whole * d + rest}/{d} = {k * (whole * d + rest)}/{d}."]
  return _hard(rng, question, steps, fraction_forms(value), "mixed_number", level)


def gen_radical(rng: random.Random, level: int, scale: int) -> Problem:
  """c * sqrt(a^2 b) = (c a) sqrt(b)."""
  b = rng.choice((2, 3, 5, 6, 7, 10, 11)[: 5 + 2 * (level > 1)])
  a = rng.randint(2, 2 + 2 * level)
  c = rng.randint(1, 2 * scale)
  n = a * a * b
  coef = "" if c == 1 else str(c)
  question = f"Simplify {coef}\\sqrt{{{n}}}."
  steps = [f"{n} = {a * a} * {b}.", f"\\sqrt{{{n}}} = \\sqrt{{{a * a}}} \\sqrt{{{b}}} = {a}\\sqrt{{{b}}}."]
  if c > 1:
    steps.append(f"{c} * {a}\\sqrt{{{b}}} = {c * a}\\sqrt{{{b}}}.")
  return _hard(rng, question, steps, radical_forms(c * a, b), "radical", level)


def gen_inequality(rng: random.Random, level: int, scale: int) -> Problem:
  del scale
  a = rng.randint(2, 3 + level)
  x0 = Fraction(rng.randint(-5 * level, 5 * level), rng.choice((1, 1, 2)) if level > 1 else 1)
  c = rng.randint(1, 9 * level)
  rhs = a * x0 - c
  greater, inclusive = rng.random() < 0.5, rng.random() < 0.5
  sym = {(True, False): ">", (True, True): "\\ge", (False, False): "<", (False, True): "\\le"}[
      (greater, inclusive)]
  rhs_text = _frac_latex(rhs) if rhs.denominator != 1 else str(rhs.numerator)
  question = f"Solve {a}x - {c} {sym} {rhs_text}. Give the answer as an interval."
  steps = [f"{a}x {sym} {_frac_latex(rhs + c)}.", f"x {sym} {_frac_latex(x0)}."]
  return _hard(rng, question, steps, interval_forms(x0, greater, inclusive), "inequality", level)


def gen_quadratic_roots(rng: random.Random, level: int, scale: int) -> Problem:
  r1, r2 = rng.sample(range(-2 * scale * level, 2 * scale * level + 1), 2)
  b, c = -(r1 + r2), r1 * r2
  question = f"Find all x such that {_poly_latex([c, b, 1])} = 0."
  steps = [f"{_poly_latex([c, b, 1])} = (x {'-' if r1 >= 0 else '+'} {abs(r1)})"
           f"(x {'-' if r2 >= 0 else '+'} {abs(r2)}).", f"x = {r1} or x = {r2}."]
  return _hard(rng, question, steps, set_forms([r1, r2]), "quadratic_roots", level)


def gen_expand(rng: random.Random, level: int, scale: int) -> Problem:
  p, q = rng.randint(-scale * level, scale * level), rng.randint(1, scale * level)
  a = rng.randint(1, level + 1)
  # (a x + p)(x + q) = a x^2 + (a q + p) x + p q
  coeffs = [p * q, a * q + p, a]
  lhs = f"({'' if a == 1 else a}x {'+' if p >= 0 else '-'} {abs(p)})(x + {q})"
  question = f"Expand {lhs}."
  steps = [f"{lhs} = {'' if a == 1 else a}x^2 + {a * q}x {'+' if p >= 0 else '-'} {abs(p)}x "
           f"{'+' if p * q >= 0 else '-'} {abs(p * q)}."]
  return _hard(rng, question, steps, poly_forms(coeffs), "expand", level)


def _with_unit_forms(base: Callable[..., Problem], kind: str) -> Callable[..., Problem]:
  """A hard-family kind: `base`'s word problem, its answer written in a random one of
  unit_forms (the unit is the item the question asks about)."""
  def gen(rng: random.Random, level: int, scale: int, ops: int = 0) -> Problem:
    p = base(rng, level, scale, ops)
    unit = re.search(r"How many (\w+)", p.question).group(1)
    work = p.solution[:p.solution.rindex("The answer is ")].strip()
    return _hard(rng, p.question, [work], unit_forms(int(p.answer), unit), kind, level)
  return gen


def _hard(rng: random.Random, question: str, steps: list[str], forms: list[str],
          kind: str, level: int) -> Problem:
  """Hard-family problem whose solution ends in a random equivalent form."""
  written = rng.choice(forms)
  return Problem(question, " ".join(steps) + " " + _boxed_end(written), forms[0], "hard",
                 kind, level, tuple(forms))


GENERATORS: dict[str, Callable[[random.Random, int, int], Problem]] = {
    "arith_chain": gen_arith_chain,
    "word_shop": gen_word_shop,
    "word_groups": gen_word_groups,
    "fraction_sum": gen_fraction_sum,
    "mixed_number": gen_mixed_number,
    "radical": gen_radical,
    "inequality": gen_inequality,
    "quadratic_roots": gen_quadratic_roots,
    "expand": gen_expand,
    "word_shop_forms": _with_unit_forms(gen_word_shop, "word_shop_forms"),
    "word_groups_forms": _with_unit_forms(gen_word_groups, "word_groups_forms"),
}


# ---------------------------------------------------------------------- splits

# Shares of the question-hash space, fixed so that a longer train stream leaves
# validation and test unchanged.
HASH_FRACTIONS = {"train": 0.8, "validation": 1 / 15, "test": 2 / 15}


def split_of(question: str, fractions_by_split: dict[str, float]) -> str:
  """Deterministic split assignment from a hash of the question text."""
  h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") / 2**64
  edge = 0.0
  for name, frac in fractions_by_split.items():
    edge += frac
    if h < edge:
      return name
  return name


def generate(split: str, num_examples: int, *, seed: int,
             fractions_by_split: dict[str, float], families: tuple[str, ...] = ("easy", "hard"),
             max_level: int = 3, operand_scale: int = 9, direct_fraction: float = 0.0,
             hard_share: float = 0.5, chain_ops: int = 0, hard_family: str = "solve",
             max_misses: int = 20000) -> Iterator[tuple[str, Problem]]:
  """Yields (id, problem) for one split, every question hashed into `split`.

  With both families, problem i is hard when floor((i + 1) h) > floor(i h) for
  h = hard_share (0.5: they alternate), so every prefix holds its share; kinds
  and levels are drawn uniformly. Validation and test hold unique questions
  (raises errors.ConfigError after `max_misses` draws in a row that give
  nothing new: the problem space is too small to fill them).
  Train is a stream of i.i.d. draws from its hash region: as long as asked for,
  never overlapping validation or test; a kind whose space is small (a level-1
  radical has a few dozen) repeats in it, a large one (arith_chain) is nearly
  always fresh.

  hard_family: the hard family's kinds, "solve" or "forms" (HARD_FAMILIES, module
  docstring).

  chain_ops: operations in every easy problem and every "forms" hard problem (0:
  arith_chain level + 1, the word problems two). Each worked step is one operation, so a chain longer than the model
  composes in one pass is answered far better by working than at once (a
  4-layer student after SFT: 5-14% vs 28-72% at 4 operations, results/testbed_probes).
  1 makes every easy problem one operation (a sum or difference, a purchase, a
  product): a level a small pretrained model reaches without fine-tuning
  (results/smollm2_onestep).

  direct_fraction: the share of train solutions that state the answer without
  working ("The answer is \\boxed{..}."), drawn independently of the problems. A
  policy fine-tuned on them mixes two behaviours, working and guessing, and
  working is the one that pays: a choice RL can learn from few samples and that
  carries over to unseen problems, as it does in pretrained models that sometimes
  answer before reasoning. Validation and test keep worked solutions.
  """
  easy_kinds, hard_kinds = HARD_FAMILIES[hard_family]
  kinds = [k for f in families for k in (easy_kinds if f == "easy" else hard_kinds)]
  unique = split != "train"
  rng = random.Random(f"{seed}:{split}")
  style_rng = random.Random(f"{seed}:{split}:direct")  # leaves the problem stream unchanged
  seen, count, misses = set(), 0, 0
  while count < num_examples:
    if misses > max_misses:
      raise errors.ConfigError(
          f"config.data.synthetic.num_{split}={num_examples}: synthetic_math holds only about "
          f"{count} unique '{split}' problems at max_level={max_level}, operand_scale="
          f"{operand_scale}; lower num_{split} or raise max_level or operand_scale")
    family = families[0] if len(families) == 1 else (
        "hard" if math.floor((count + 1) * hard_share) > math.floor(count * hard_share)
        else "easy")
    kind = rng.choice([k for k in kinds if (k in easy_kinds) == (family == "easy")])
    level = rng.randint(1, max_level)
    ops = {"ops": chain_ops} if chain_ops and kind in EASY_KINDS + FORMS_KINDS else {}
    problem = GENERATORS[kind](rng, level, operand_scale, **ops)
    if ((unique and problem.question in seen)
        or split_of(problem.question, fractions_by_split) != split):
      misses += 1
      continue
    misses = 0
    seen.add(problem.question)
    if split == "train" and direct_fraction and style_rng.random() < direct_fraction:
      problem = dataclasses.replace(problem, solution=direct_solution(problem.solution))
    yield f"{split}-{count:06d}", problem
    count += 1
