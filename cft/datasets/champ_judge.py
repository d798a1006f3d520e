"""CHAMP's free-text judge: a one-sentence summary against a free-text reference answer.

CHAMP's references read like `C(10, 5), or equivalently 252`, `3 is the only possible value`,
`The limit exists and is equal to 2/3`, `No`; model summaries read like `There are 29 valid
strings of length 6 that ...`. We decide only where it is safe and say "unknown" elsewhere:

- the reference must reduce to one number, one simple expression (alternatives joined by
  "or equivalently" all count), or a bare Yes/No;
- a `\\boxed{}` in the summary is its answer;
- otherwise the summary's *claimed* values are those after "is / are / = / equals / be / has",
  a number standing alone in `$...$`, and items listed after them ("0 or 1"). Numbers in
  exponents, subscripts, after `>`/`≤`, or restated from the question (when `question` is
  given) are context, not claims. "right": a claimed value matches and none conflicts.
  "wrong": claims exist, none matches, and no value anywhere in the summary matches either.
- a negation ("not", "cannot", "no ") before a claim, or any parse doubt, gives "unknown".

It runs sympy, so callers run it in the answer Grader's workers, under its hard per-item
timeout: `grader.run(judge_free_text, items, fallback=UNKNOWN)`.
"""
from __future__ import annotations

import re
from fractions import Fraction

from cft.records import RIGHT, UNKNOWN, WRONG

_ALTERNATIVES = re.compile(r",\s*or\s+(?:equivalently|an equivalent form such as)\s+", re.I)
_APPROX = re.compile(r",\s*or\s+approximately\s+", re.I)
_REF_PATTERNS = [
    re.compile(r"^(?P<v>.+?)\s+is the only possible value$", re.I),
    re.compile(r"^the limit exists and is equal to (?P<v>.+)$", re.I),
    re.compile(r"^the only possible value for the limit is (?P<v>.+)$", re.I),
    re.compile(r"^(?P<v>-?\d+)\s+(?:values|pairs|roots|inequalities|numbers)$", re.I),
    re.compile(r"^(?P<v>-?\d+)\s*\((?:i\.e\.,?\s*)?[^()]*\)$", re.I),
]
_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?"
_EXPR_REF = re.compile(r"^[\w()^*/+\-!. ,]+$")
_FUNCS = {"C": "binomial", "floor": "floor", "sqrt": "sqrt"}
# A number in the summary: not part of a word, exponent, subscript or decimal.
_NUM_IN_TEXT = re.compile(rf"(?<![\w.^_{{\\])(?:\\frac\{{(-?\d+)\}}\{{(\d+)\}}|({_NUMBER})(?:\s*/\s*(\d+))?)(?![\w.]*\d)(?![\w^_])")
_CLAIM = re.compile(
    r"(?:\bis|\bare|=|\bequals?(?: to)?|\bbe|\bwas|\bwere|\bhas|\bhave|\bthere (?:is|are)|answer is)"
    r"\s*(?:exactly |only |precisely |just |the number |a total of |\$|\\\(|\\\[|\{)*\s*$", re.I)
_NEGATION = re.compile(r"\b(?:not|cannot|never|no|none|neither|nor|isn't|aren't|impossible)\b|n't", re.I)
_CONDITION = re.compile(r"(?:[<>≤≥]|\\[lg]eq?|\\[lg]t|\\neq|≠|\bmod|\\pmod|\\mod)\s*\$?\s*$")


def _parse_ref_value(text: str):
    """A Fraction, a sympy expression, or None when `text` is not one simple value."""
    text = text.strip().rstrip(".").strip()
    if re.fullmatch(_NUMBER, text):
        return Fraction(text.replace(",", ""))
    m = re.fullmatch(r"(-?\d+)\s*/\s*(\d+)", text)
    if m:
        return Fraction(int(m.group(1)), int(m.group(2)))
    if not _EXPR_REF.match(text) or "..." in text or "_(" in text or " " in text.replace(", ", ","):
        return None
    return _sympify(text)


def _sympify(text: str):
    """A sympy expression for a short ASCII/LaTeX-ish expression, or None."""
    if len(text) > 80 or re.search(r"\^[^\s]*\^", text) or re.search(r"\d{4,}\s*!", text):
        return None  # power towers and huge factorials: not worth a hang in-process
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor, implicit_multiplication_application, parse_expr, standard_transformations)

    local = {name: getattr(sympy, fn) for name, fn in _FUNCS.items()}
    try:
        expr = parse_expr(text, local_dict=local, evaluate=True,
                          transformations=standard_transformations + (implicit_multiplication_application, convert_xor))
    except Exception:
        return None
    return expr if isinstance(expr, sympy.Expr) else None


def reference_values(reference: str) -> tuple[str, list] | None:
    """("number" | "expr" | "bool", accepted values) or None when the reference is not simple."""
    ref = " ".join(str(reference).split())
    if ref.lower() in ("yes", "no"):
        return "bool", [ref.lower() == "yes"]
    ref = _APPROX.split(ref)[0]  # an approximation is not exact enough to judge by
    values = []
    for alt in _ALTERNATIVES.split(ref):
        for pattern in _REF_PATTERNS:
            m = pattern.match(alt)
            if m:
                alt = m.group("v")
                break
        value = _parse_ref_value(alt)
        if value is not None:
            values.append(value)
    if not values:
        return None
    kind = "number" if all(isinstance(v, Fraction) for v in values) else "expr"
    if kind == "expr":  # an expression without free symbols is a number in disguise (`sqrt(3)`, `C(10,5)`)
        values = [_as_number(v) for v in values]
        kind = "number" if all(isinstance(v, (Fraction, float)) for v in values) else "expr"
    return kind, values


def _as_number(value):
    """A Fraction or float for a sympy number without symbols; anything else unchanged."""
    import sympy

    if not isinstance(value, sympy.Expr) or value.free_symbols:
        return value
    if value.is_Rational:
        return Fraction(int(value.p), int(value.q))
    try:
        return float(value.evalf())
    except (TypeError, ValueError):
        return value


def _equal_numbers(a, b) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    return abs(float(a) - float(b)) <= 1e-6 * max(abs(float(a)), abs(float(b)), 1e-12)


def _summary_numbers(summary: str, question: str | None):
    """(value, is_claim, negated) for every number in the summary that is not context."""
    question_numbers = set(re.findall(r"\d+(?:\.\d+)?", question or ""))
    found, claim_end = [], -1
    for m in _NUM_IN_TEXT.finditer(summary):
        before = summary[max(0, m.start() - 40):m.start()]
        if _CONDITION.search(before):
            continue
        if m.group(1) is not None:
            value = Fraction(int(m.group(1)), int(m.group(2)))
        else:
            value = Fraction(m.group(3).replace(",", ""))
            if m.group(4):
                if int(m.group(4)) == 0:
                    continue
                value /= int(m.group(4))
        in_math = re.search(r"\$\s*$", before) and re.match(r"\s*\$", summary[m.end():])
        listed = claim_end >= 0 and re.fullmatch(r"\s*\$?\s*(?:,|,?\s*(?:and|or))\s*\$?\s*", summary[claim_end:m.start()])
        is_claim = bool(_CLAIM.search(before) or in_math or listed)
        if not is_claim and m.group(3) and m.group(3) in question_numbers:
            continue
        negated = bool(_NEGATION.search(before[-25:]))
        found.append((value, is_claim, negated))
        claim_end = m.end() if is_claim else -1
    return found


def _judge_boxed(summary: str, kind: str, values: list) -> str | None:
    from cft.answers.extract import last_boxed

    boxed = last_boxed(summary)
    if boxed is None:
        return None
    from cft.answers.check import parse_number
    from cft.answers.normalize import normalize

    if kind == "number":
        parsed = parse_number(normalize(boxed))
        if parsed is None:
            return UNKNOWN
        return RIGHT if any(_equal_numbers(parsed[0], v) for v in values) else WRONG
    return None  # expressions: fall through to the candidate rules, which see the boxed text too


def _latex_to_ascii(text: str) -> str:
    text = re.sub(r"\\boxed\{(.*)\}", r"\1", text)
    text = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", text)
    text = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", text)
    text = re.sub(r"\\binom\{([^{}]*)\}\{([^{}]*)\}", r"C(\1,\2)", text)
    text = text.replace("\\cdot", "*").replace("\\times", "*").replace("\\left", "").replace("\\right", "")
    text = text.replace("{", "(").replace("}", ")").replace("\\", "")
    return text.strip().strip("$").strip()


def _expr_candidates(summary: str) -> list[tuple[str, bool]]:
    """(text, is_claim): math segments and what follows a claim word, up to a clause break."""
    out = []
    for m in re.finditer(r"\$([^$]+)\$|\\\((.+?)\\\)|\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", summary):
        text = next(g for g in m.groups() if g is not None)
        before = summary[max(0, m.start() - 40):m.start()]
        is_claim = bool(_CLAIM.search(before)) or m.group(3) is not None or "\\boxed" in text
        out.append((text.split("=")[-1], is_claim))
    for m in re.finditer(r"(?:\bis|=|\bequals)\s+([\w()^*/+\-!. ]+?)(?=,\s|\.\s|\.$|$|\s(?:and|for|when|where|which|with)\b)", summary):
        out.append((m.group(1), True))
    return out


def _expr_equal(a, b) -> bool | None:
    """True/False when sure, None when unsure (different symbols, undefined points)."""
    import sympy

    if a.free_symbols != b.free_symbols:
        return None if a.free_symbols and b.free_symbols else False
    try:
        if sympy.simplify(a - b) == 0:
            return True
        symbols = sorted(a.free_symbols, key=str)
        for point in (3, 4, 5, 7):
            subs = {s: point + i for i, s in enumerate(symbols)}
            av, bv = complex(a.subs(subs).evalf()), complex(b.subs(subs).evalf())
            if abs(av - bv) > 1e-6 * max(abs(av), abs(bv), 1.0):
                return False
        return True
    except Exception:
        return None


def _judge_expr(summary: str, values: list) -> str:
    decisions = []
    for text, is_claim in _expr_candidates(summary):
        expr = _sympify(_latex_to_ascii(text))
        if expr is None:
            continue
        same = [_expr_equal(expr, v) for v in values]
        decisions.append((True if True in same else (False if all(s is False for s in same) else None), is_claim))
    claims = [d for d, is_claim in decisions if is_claim]
    if True in claims and False not in claims and None not in claims:
        return RIGHT
    if claims and all(d is False for d in claims) and True not in [d for d, _ in decisions]:
        return WRONG
    return UNKNOWN


def judge_free_text(response_summary: str, reference_answer: str, question: str | None = None) -> str:
    """"right" / "wrong" / "unknown" for a free-text summary against a free-text reference.

    Conservative by design (see the module docstring): "unknown" whenever the reference is not
    one simple value or the summary's claim is ambiguous. Pass `question` when you have it:
    numbers restated from the question then never count as the summary's answer.
    """
    if not response_summary or not reference_answer:
        return UNKNOWN
    reduced = reference_values(reference_answer)
    if reduced is None:
        return UNKNOWN
    kind, values = reduced
    summary = " ".join(response_summary.split())
    if kind == "bool":
        m = re.match(r"^\W*(yes|no)\b", summary, re.I)
        return UNKNOWN if m is None else (RIGHT if (m.group(1).lower() == "yes") == values[0] else WRONG)
    boxed = _judge_boxed(summary, kind, values)
    if boxed is not None:
        return boxed
    if kind == "expr":
        return _judge_expr(summary, values)
    numbers = _summary_numbers(summary, question)
    if any(negated for _, is_claim, negated in numbers if is_claim):
        return UNKNOWN
    matches = [any(_equal_numbers(n, v) for v in values) for n, _, _ in numbers]
    claims = [hit for hit, (_, is_claim, _) in zip(matches, numbers) if is_claim]
    if claims and all(claims):
        return RIGHT
    if claims and not any(matches):
        return WRONG
    if not claims and len(numbers) == 1 and matches[0]:
        return RIGHT
    return UNKNOWN
