"""Is a predicted final answer equal to the reference? The in-process checker.

Order: normalized strings -> booleans / choice letters -> numbers -> sequences (tuples,
intervals, unordered answer lists, matrices) elementwise -> symbolic (latex2sympy + sympy).

Rules that differ on purpose from the Qwen2.5-Math / CFT evaluation grader:
- numbers compare with a relative tolerance of 1e-4; they are never rounded to one decimal
  (that grader calls 0.04 and 0.01 equal), and two integers must be equal exactly;
- a percentage rule applies only when a `%` is actually written (that grader accepts 500 for 5);
- numbers are exact fractions, so `10^{400}` never overflows a float;
- an answer is parsed whole or not at all: `2^(2^(2))` is unparsable, never read as its prefix 2.

The symbolic stage first asks the structural guards (`guards.costly`: power towers, huge
factorials and exponents, deep nesting, length -> TIMEOUT / UNPARSABLE at once) and the
plain-value reader (`numeric.decide`), and only then latex2sympy + sympy (`symbolic`).
`fast_check` runs the same rules with sympy replaced by "undecided": microseconds, and never a
verdict `check` would not give; it reads only answers within the FAST_MAX_* sizes, so no input
can make it slow. `check` can still be slow on input the guards do not recognise;
callers that grade model output should use `cft.answers.grader.Grader`, which runs the fast path
in-process and the rest under a hard per-pair timeout in worker processes.
"""
from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import Callable

from cft.answers.guards import MAX_DEPTH, MAX_NUMBER_EXPONENT, costly
from cft.answers.normalize import normalize
from cft.answers.numeric import decide
from cft.answers.verdict import Verdict

Symbolic = Callable[[str, str], Verdict]  # the last stage: sympy in `check`, deferral in `fast_check`
REL_TOL = Fraction(1, 10_000)
MAX_EXPONENT = MAX_NUMBER_EXPONENT  # beyond it: `\\times 10^{..}` is left to sympy, e-notation is TIMEOUT (guards)
MAX_NUMBER_CHARS = 4_000  # longer numbers are not read exactly (Python refuses int() of 4,300+ digits)

# What `fast_check` reads in the calling process, where no timeout applies. Beyond these sizes an
# answer goes to the Grader's workers: the rules below are at most quadratic in the length, the
# bracket depth (one recursion per level) and the number of commas (unordered lists match item
# against item), so within them a pair costs milliseconds at worst, whatever its shape
# (tests/test_hostile_answers.py fuzzes it).
FAST_MAX_CHARS = 1_000  # longest benchmark reference: 210 characters; CHAMP's longest answer: 1,014
FAST_MAX_DEPTH = MAX_DEPTH  # deepest benchmark reference: 4 brackets
FAST_MAX_COMMAS = 64  # most in a benchmark reference: 47


# Three words in a row outside LaTeX commands: prose, not a math answer (sympy would read it as
# a long product of symbols, slowly, and compare nonsense).
_PROSE = re.compile(r"(?:(?<![\\\w])[A-Za-z]{2,}[ ,;:]+){2}[A-Za-z]{2,}\b")
_BOOLS = {"true": True, "yes": True, "false": False, "no": False}
_CHOICE = re.compile(r"^\(?([A-Ja-j])\)?$")
_INT = r"[-+]?\d+"
_DEC = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"  # one way to match each string: backtracking is linear
_SCI = re.compile(
    rf"^(?P<m>{_DEC})(?:[eE](?P<e>{_INT})|(?:\\times|\*|x)10\^(?:\{{(?P<b>{_INT})\}}|(?P<c>{_INT})))?$"
)
_POW10 = re.compile(rf"^10\^(?:\{{(?P<b>{_INT})\}}|(?P<c>\d))$")
_FRAC = re.compile(rf"^(?P<s>-?)\\frac(?:\{{(?P<a>{_DEC})\}}|(?P<a1>\d))(?:\{{(?P<b>{_DEC})\}}|(?P<b1>\d))$")
_SLASH = re.compile(rf"^(?P<a>{_DEC})/(?P<b>{_DEC})$")
_MATRIX = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL)


def _decimal(text: str) -> Fraction:
    return Fraction(text.lstrip("+"))


def parse_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_integer_literal) when the WHOLE string is a plain number, else None.

    Accepts 12, -3.5, .5, 4.5e33, 4.5\\times10^{33}, 10^{400}, \\frac{1}{2}, 1/2 (after
    `normalize`, so no spaces). Exact: no float overflow, no rounding. None beyond
    `MAX_NUMBER_CHARS` characters or an exponent of `MAX_EXPONENT`.
    """
    if len(s) > MAX_NUMBER_CHARS:
        return None
    m = _SCI.match(s)
    if m:
        exponent = m.group("e") or m.group("b") or m.group("c")
        if exponent is None:
            return _decimal(m.group("m")), re.fullmatch(_INT, m.group("m")) is not None
        if abs(int(exponent)) > MAX_EXPONENT:
            return None
        return _decimal(m.group("m")) * Fraction(10) ** int(exponent), False
    m = _POW10.match(s)
    if m:
        exponent = int(m.group("b") or m.group("c"))
        if abs(exponent) > MAX_EXPONENT:
            return None
        return Fraction(10) ** exponent, exponent >= 0
    m = _FRAC.match(s) or _SLASH.match(s)
    if m:
        groups = m.groupdict()
        num, den = _decimal(groups.get("a") or groups.get("a1")), _decimal(groups.get("b") or groups.get("b1"))
        if den == 0:
            return None
        value = num / den
        return (-value if groups.get("s") else value), False
    return None


def numbers_close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


def _compare_numbers(pred: str, ref: str) -> Verdict | None:
    """EQUAL/DIFFERENT when both sides are plain numbers (with `%` rules), else None."""
    p_pct, r_pct = pred.endswith("%"), ref.endswith("%")
    p, r = parse_number(pred.removesuffix("%")), parse_number(ref.removesuffix("%"))
    if p is None or r is None:
        return None
    (pv, p_int), (rv, r_int) = p, r
    candidates = [(pv, rv)]
    if p_pct != r_pct:  # "50%" vs "0.5": only when a % is written on one side
        candidates.append((pv / 100, rv) if p_pct else (pv, rv / 100))
    for a, b in candidates:
        exact = p_int and r_int and a == pv and b == rv
        if (a == b) if exact else numbers_close(a, b):
            return Verdict.EQUAL
    return Verdict.DIFFERENT


def split_top_level(s: str, sep: str = ",") -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _outer_brackets(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) if s is one bracketed group like (a,b), [a,b), \\{a,b\\}."""
    if len(s) < 2 or s[0] not in "([{" or s[-1] not in ")]}":
        return None
    depth = 0
    for i, ch in enumerate(s):
        depth += (ch in "([{") - (ch in ")]}")
        if depth == 0 and i < len(s) - 1:
            return None
    return s[0], s[1:-1], s[-1]


def _matrix_rows(s: str) -> list[list[str]] | None:
    m = _MATRIX.match(s)
    if not m:
        return None
    return [row.split("&") for row in m.group(2).split("\\\\") if row.strip()]


def _combine(verdicts: list[Verdict]) -> Verdict:
    if any(v == Verdict.DIFFERENT for v in verdicts):
        return Verdict.DIFFERENT
    if all(v == Verdict.EQUAL for v in verdicts):
        return Verdict.EQUAL
    return Verdict.UNPARSABLE


def _compare_sequences(pred: str, ref: str, symbolic: Symbolic) -> Verdict | None:
    p_rows, r_rows = _matrix_rows(pred), _matrix_rows(ref)
    if p_rows is not None or r_rows is not None:
        if p_rows is None or r_rows is None or [len(r) for r in p_rows] != [len(r) for r in r_rows]:
            return Verdict.DIFFERENT
        return _combine([_check_normalized(a, b, symbolic) for pr, rr in zip(p_rows, r_rows) for a, b in zip(pr, rr)])
    if "\\cup" in ref or "\\cup" in pred:
        p_parts, r_parts = pred.split("\\cup"), ref.split("\\cup")
        if len(p_parts) != len(r_parts):
            return Verdict.DIFFERENT
        return _combine([_check_normalized(a, b, symbolic) for a, b in zip(p_parts, r_parts)])
    p_br, r_br = _outer_brackets(pred), _outer_brackets(ref)
    p_items = split_top_level(p_br[1] if p_br else pred)
    r_items = split_top_level(r_br[1] if r_br else ref)
    if len(p_items) == 1 and len(r_items) == 1:
        if p_br and r_br and (p_br[0], p_br[2]) != (r_br[0], r_br[2]):
            return None if p_br[0] == "{" or r_br[0] == "{" else Verdict.DIFFERENT
        return None
    if len(p_items) != len(r_items):
        return Verdict.DIFFERENT
    ordered = bool(r_br and r_br[0] != "{") or bool(p_br and p_br[0] != "{")
    if ordered:
        if p_br and r_br and (p_br[0], p_br[2]) != (r_br[0], r_br[2]):
            return Verdict.DIFFERENT
        return _combine([_check_normalized(a, b, symbolic) for a, b in zip(p_items, r_items)])
    # unordered answer lists ("1,3,5", sets): match each reference item to a distinct prediction
    remaining = list(p_items)
    verdicts = []
    for r in r_items:
        hit = next((p for p in remaining if _check_normalized(p, r, symbolic) == Verdict.EQUAL), None)
        if hit is None:
            verdicts.append(Verdict.DIFFERENT)
            break
        remaining.remove(hit)
        verdicts.append(Verdict.EQUAL)
    return _combine(verdicts)


_SIMPLE_LHS = re.compile(r"^(?:[a-zA-Z](?:_\{?\w+\}?)?|[a-zA-Z]\([a-z,]+\))$")


def _strip_simple_lhs(s: str) -> str:
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        if _SIMPLE_LHS.match(lhs):
            return rhs
    return s


def _check_normalized(pred: str, ref: str, symbolic: Symbolic) -> Verdict:
    if pred == ref:
        return Verdict.EQUAL
    if not pred or not ref:
        return Verdict.DIFFERENT if pred or ref else Verdict.EQUAL
    if pred.lower() == ref.lower() and re.fullmatch(r"[A-Za-z ]+", ref):
        return Verdict.EQUAL
    if ref.lower() in _BOOLS:
        return Verdict.EQUAL if _BOOLS.get(pred.lower()) == _BOOLS[ref.lower()] else Verdict.DIFFERENT
    ref_choice = _CHOICE.match(ref)
    if ref_choice and not ref_choice.group(1).lower() in "e":
        pred_choice = _CHOICE.match(pred)
        if pred_choice:
            return Verdict.EQUAL if pred_choice.group(1).lower() == ref_choice.group(1).lower() else Verdict.DIFFERENT
    verdict = _compare_numbers(pred, ref)
    if verdict is not None:
        return verdict
    verdict = _compare_sequences(pred, ref, symbolic)
    if verdict is not None:
        return verdict
    p, r = _strip_simple_lhs(pred), _strip_simple_lhs(ref)
    if p != pred or r != ref:
        return _check_normalized(p, r, symbolic)
    return symbolic(pred, ref)


class Undecided(Exception):
    """Raised on the fast path where only sympy could decide."""


def _undecided(pred: str, ref: str) -> Verdict:
    """The fast path's symbolic stage: what the guards reject or plain values settle; defer the rest."""
    verdict = costly(pred) or costly(ref) or decide(pred, ref)
    if verdict is None:
        raise Undecided
    return verdict


def check(prediction: str | None, reference: str) -> Verdict:
    """Verdict on `prediction` against `reference` (see the module docstring for the rules).

    A missing prediction is UNPARSABLE; an answer that cannot be parsed whole is UNPARSABLE
    (when it is not already equal as a string); one too costly to evaluate (`cft.answers.guards`)
    is TIMEOUT or UNPARSABLE at once. No rule needs OlympiadBench's `answer_type`: its intervals,
    tuples and equations are recognised from the answers themselves.
    """
    from cft.answers.symbolic import compare_symbolic

    return _check(prediction, reference, compare_symbolic)


def fast_check(prediction: str | None, reference: str) -> Verdict | None:
    """`check`'s verdict when it needs no sympy, else None: the same rules, run without the
    symbolic stage, so it never disagrees with `check`. Microseconds, and bounded by construction
    (None at once for an answer beyond the FAST_MAX_* sizes): safe in the calling process."""
    if prediction is None:
        return Verdict.UNPARSABLE
    if not (within_fast_limits(str(prediction)) and within_fast_limits(str(reference))):
        return None
    try:
        return _check(prediction, reference, _undecided)
    except Exception:  # Undecided, or a rule that raises: the worker's full check says what it is
        return None


def canonical_form(answer: str) -> str | None:
    """A string that is the same for answers `check` certainly calls equal, or None where that
    is not cheap to know: for grouping many sampled answers (maj@k) before any pairwise check.

    A plain number gives its exact value (`1/2`, `0.5`, `\\frac{1}{2}`, `\\dfrac12` all give
    "1/2"; `50%` gives "50%"); anything else its normalized string. Answers with equal forms are
    EQUAL both ways round; equal answers may still have different forms (`\\sqrt{4}` and `2`), so
    a caller checks across forms. Bounded like `fast_check`: None beyond its sizes, and for prose.
    """
    text = str(answer)
    if not within_fast_limits(text) or _is_prose(text):
        return None
    form = normalize(text)
    percent = form.endswith("%")
    try:
        number = parse_number(form.removesuffix("%"))
    except (ValueError, ZeroDivisionError):
        return None
    if number is None:
        return form
    value = number[0]
    if max(abs(value.numerator), value.denominator) >= 10**100:
        return form  # printing the exact value costs more than this is worth
    return f"{value}%" if percent else str(value)


def within_fast_limits(answer: str) -> bool:
    """Whether `answer` is small enough for the in-process fast path (the FAST_MAX_* sizes)."""
    if len(answer) <= FAST_MAX_DEPTH:  # most answers: too short to break any limit
        return True
    if len(answer) > FAST_MAX_CHARS or answer.count(",") > FAST_MAX_COMMAS:
        return False
    openers = answer.count("(") + answer.count("[") + answer.count("{")
    if openers <= FAST_MAX_DEPTH:
        return True
    depth = 0
    for ch in answer:
        depth += (ch in "([{") - (ch in ")]}")
        if depth > FAST_MAX_DEPTH:
            return False
    return True


def _check(prediction: str | None, reference: str, symbolic: Symbolic) -> Verdict:
    if prediction is None:
        return Verdict.UNPARSABLE
    ref = normalize(str(reference))
    pred = normalize(str(prediction), is_prediction="=" not in ref)
    if pred != ref and (_is_prose(str(prediction)) or _is_prose(str(reference))):
        return Verdict.UNPARSABLE
    return _check_normalized(pred, ref, symbolic)


@functools.lru_cache(maxsize=2**16)
def _is_prose(text: str) -> bool:
    return _PROSE.search(re.sub(r"\\[a-zA-Z]+", " ", text)) is not None
