"""Structural guards: answers that sympy cannot evaluate cheaply, recognised without evaluating.

Runs on a normalized answer just before the symbolic stage, in the parent process as well as in
the workers, so a degenerate model's output is settled in microseconds instead of waiting out
the Grader's hard timeout (which stays as the last line of defence):

- longer than `MAX_CHARS` or nested deeper than `MAX_DEPTH` -> UNPARSABLE (latex2sympy's parser
  recurses per bracket and is slow on long input; no benchmark reference comes close);
- e-notation with an exponent above `MAX_NUMBER_EXPONENT` (`1e99999999999`), which
  `check.parse_number` does not read exactly and latex2sympy would read as 1*E*99999999999,
  and a numeric exponent above `MAX_EXPONENT`, a factorial of more than `MAX_FACTORIAL`, a binomial
  of more than `MAX_EXPONENT`, or a number of more than `MAX_DIGITS` digits built from powers /
  factorials (a power tower) -> TIMEOUT: the value exists but is too costly to compute.

The sizes are estimated in log10 by a small recursive-descent reader of the integer
sub-expressions (digits, braces, parentheses, + - *, ^, !). Written here because sympy and
latex2sympy only learn the size of a number by building it, which is the hang this prevents.
"""
from __future__ import annotations

import math
import re

from cft.answers.verdict import Verdict

MAX_CHARS = 400       # longest benchmark reference item: 173 characters
MAX_DEPTH = 20        # deepest benchmark reference: 4 brackets
MAX_EXPONENT = 10**5  # largest exponent in a benchmark reference: 1009
MAX_FACTORIAL = 10**4  # largest factorial in a benchmark reference: 100!
MAX_DIGITS = 10**5
MAX_NUMBER_EXPONENT = 10**4  # the largest power of ten `check.parse_number` reads exactly
_E_NOTATION = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)[eE][-+]?(\d+)")


class _Costly(Exception):
    pass


class _Reader:
    """log10 magnitude of the integer expression starting at `pos`, or None where it is not one."""

    def __init__(self, s: str):
        self.s = s
        # Each (rule, start) is read once: `1^1^1^...` would otherwise reread its tail at every `^`.
        self.memo: dict[tuple[str, int], tuple[float, int] | None] = {}

    def factor(self, i: int) -> tuple[float, int] | None:
        if ("factor", i) not in self.memo:
            self.memo["factor", i] = self._factor(i)
        return self.memo["factor", i]

    def expr(self, i: int) -> tuple[float, int] | None:
        if ("expr", i) not in self.memo:
            self.memo["expr", i] = self._expr(i)
        return self.memo["expr", i]

    def _factor(self, i: int) -> tuple[float, int] | None:
        s = self.s
        if i < len(s) and s[i].isdecimal():  # what int() reads: not `²`
            j = i
            while j < len(s) and s[j].isdecimal():
                j += 1
            digits = s[i:j].lstrip("0")
            mag = (len(digits) - 1 + math.log10(int(digits[:15]) / 10 ** (len(digits[:15]) - 1))) if digits else 0.0
            i = j
        elif i < len(s) and s[i] in "({":
            inner = self.expr(i + 1)
            if inner is None:
                return None
            mag, j = inner
            if j >= len(s) or s[j] != {"(": ")", "{": "}"}[s[i]]:
                return None
            i = j + 1
        else:
            return None
        while i < len(s) and s[i] == "!":
            if mag > math.log10(MAX_FACTORIAL):
                raise _Costly
            n = 10**mag
            mag, i = (n * math.log10(max(n, 2))), i + 1
        if s.startswith("^", i) or s.startswith("**", i):
            exponent = self.factor(i + (2 if s[i] == "*" else 1))
            if exponent is None:
                return None
            exp_mag, i = exponent
            if exp_mag > math.log10(MAX_EXPONENT):
                raise _Costly
            mag = max(mag, 0.0) * 10**exp_mag
        if mag > MAX_DIGITS:
            raise _Costly
        return mag, i

    def _expr(self, i: int) -> tuple[float, int] | None:
        total, first = 0.0, True
        while True:
            term = self.factor(i)
            if term is None:
                return None
            mag, i = term
            total = mag if first else max(total, mag) + 0.31  # + and - : at most doubles; * adds below
            first = False
            while self.s.startswith("*", i) and not self.s.startswith("**", i):
                nxt = self.factor(i + 1)
                if nxt is None:
                    return None
                total, i = total + nxt[0], nxt[1]
            if i < len(self.s) and self.s[i] in "+-":
                i += 1
                continue
            return total, i


def costly(answer: str) -> Verdict | None:
    """UNPARSABLE / TIMEOUT for an answer too long, deep or large to evaluate; None if it is fine."""
    if len(answer) > MAX_CHARS:
        return Verdict.UNPARSABLE
    e_notation = _E_NOTATION.fullmatch(answer)
    if e_notation and int(e_notation.group(1)) > MAX_NUMBER_EXPONENT:
        return Verdict.TIMEOUT
    depth = deepest = 0
    for ch in answer:
        depth += (ch in "([{") - (ch in ")]}")
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        return Verdict.UNPARSABLE
    reader = _Reader(answer)
    for i, ch in enumerate(answer):
        starts_factor = (ch.isdecimal() and (i == 0 or not answer[i - 1].isdecimal())) or ch in "({"
        try:
            if starts_factor:
                reader.factor(i)
            elif ch == "^" or answer.startswith("**", i) or answer.startswith("\\binom", i):
                # a symbolic base under a huge exponent; a binomial of a huge number
                operand = reader.factor(i + (6 if ch == "\\" else 2 if ch == "*" else 1))
                if operand is not None and operand[0] > math.log10(MAX_EXPONENT):
                    return Verdict.TIMEOUT
        except _Costly:
            return Verdict.TIMEOUT
        except (OverflowError, RecursionError):
            return Verdict.TIMEOUT
    return None
