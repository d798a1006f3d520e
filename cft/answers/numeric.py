"""The fast path's symbolic stage: plain LaTeX expressions compared by their values, without sympy.

latex2sympy's ANTLR parser costs 50 ms to seconds per answer (full-context prediction in a
pure-Python runtime) and dominates the checker's time once strings and numbers are settled. Most
answers that reach it are plain expressions (`n^{2}-n+1`, `\\frac{15-8\\sqrt{3}}{33}`,
`2\\cos(\\pi t+\\pi/3)`). For those we read the value with a small recursive-descent evaluator of a
deliberately narrow LaTeX subset, following latex2sympy's grammar where it matters (implicit
multiplication binds tighter than `/`, so `1/2x` is 1/(2x)), and decide only where the slow
path's verdict is certain:

- both sides constant and real: EQUAL / DIFFERENT by the same 1e-4 relative rule as the slow
  path's `sympy.N` comparison, with a margin either side (in between: undecided);
- otherwise: DIFFERENT when the values differ clearly at two sample points (then `a - b` is not
  identically zero, so `simplify` and `equals` could not have said equal); else undecided.

Letters are read as latex2sympy reads them (`e` Euler's number, `I` the imaginary unit, `A` as
`a`, `\\omega_{n}` one symbol, `u(t)` an undefined function at t). Where we tie together what
latex2sympy keeps apart (`dx` as d*x, `u(t)` and `U(t)`), our values are still the values of
latex2sympy's expressions at one point, which is all a DIFFERENT verdict needs. Anything outside
the subset (`\\sqrt2` without braces, primes, `f(x+1)`, `!!`, `=`, commas, `\\sin x y`, ...) is undecided and goes to sympy; the test
`test_value_reader_agrees_with_sympy_on_real_references` holds the reader to latex2sympy + sympy.
"""
from __future__ import annotations

import cmath
import math
import re
import zlib

from cft.answers.verdict import Verdict

# Two sample values per letter: generic reals, away from 0, 1 and small integers.
_SAMPLES = tuple({name: complex(start + step * k) for k, name in enumerate("abcdefghijklmnopqrstuvwxyzE")}
                 for start, step in ((1.2345, 0.1371), (2.1718, 0.0913)))
_FUNCS = {"\\sin": cmath.sin, "\\cos": cmath.cos, "\\tan": cmath.tan, "\\ln": cmath.log, "\\exp": cmath.exp,
          "\\log": cmath.log10, "\\arcsin": cmath.asin, "\\arccos": cmath.acos, "\\arctan": cmath.atan}
_GREEK = re.compile(r"\\(varepsilon|vartheta|varphi|alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa"
                    r"|lambda|mu|nu|xi|rho|sigma|tau|upsilon|phi|chi|psi|omega)", re.I)
_APPLIED = re.compile(r"[A-Za-z]\((?:[a-df-z]|\d+)\)")  # u(t), y(0): one letter, a lower-case symbol or an integer
_MIXED = re.compile(r"(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_SUBSCRIPT = re.compile(r"_(?:\{([A-Za-z0-9]+)\}|([A-Za-z0-9]))")
_STOPS = "+-*/)}]"  # what ends an implicit product
_N_TOL, _PROBE_TOL, _MARGIN = 1e-4, 1e-6, 1.05


class _Outside(Exception):
    """The answer is outside the subset: leave it to sympy."""


class _Reader:
    def __init__(self, s: str, values: dict[str, complex]):
        self.s, self.i, self.values = s, 0, values
        self.symbolic = False  # whether a letter (a symbol) was read

    def peek(self, text: str) -> bool:
        return self.s.startswith(text, self.i)

    def take(self, text: str) -> None:
        if not self.peek(text):
            raise _Outside
        self.i += len(text)

    def read(self) -> complex:
        value = self.mp()
        if self.i != len(self.s):
            raise _Outside
        return value

    def mp(self) -> complex:
        """additive > product (explicit * /) > unary (signs, implicit products) > power > atom."""
        value = self.product()
        while self.i < len(self.s) and self.s[self.i] in "+-":
            sign = self.s[self.i]
            self.i += 1
            rhs = self.product()
            value = value + rhs if sign == "+" else value - rhs
        return value

    def product(self) -> complex:  # explicit * and /: looser than implicit multiplication, as in latex2sympy
        value = self.unary()
        while True:
            if self.peek("*"):
                self.i += 1
                value *= self.unary()
            elif self.peek("\\times"):
                self.i += len("\\times")
                value *= self.unary()
            elif self.peek("/"):
                self.i += 1
                value /= self.unary()
            else:
                return value

    def unary(self) -> complex:
        if self.i < len(self.s) and self.s[self.i] in "+-":
            sign = -1 if self.s[self.i] == "-" else 1
            self.i += 1
            return sign * self.unary()
        value = self.postfix()
        while self.i < len(self.s) and self.s[self.i] not in _STOPS and not self.peek("\\times") \
                and not self.peek("\\rfloor") and not self.peek("\\rceil"):
            value *= self.postfix()  # implicit multiplication: 2x, 2\sqrt{3}, xy
        return value

    def postfix(self) -> complex:
        value = self.power()
        if self.peek("!!"):
            raise _Outside
        if self.peek("!"):
            if value.imag or value.real != int(value.real) or not 0 <= value.real <= 170:
                raise _Outside
            self.i += 1
            value = complex(float(math.factorial(int(value.real))))
        return value

    def power(self) -> complex:
        base = self.atom()
        if self.peek("^"):
            self.i += 1
            if self.peek("{"):
                exponent = self.group()
            elif self.i < len(self.s) and self.s[self.i].isdigit():
                j = self.i
                while j < len(self.s) and self.s[j].isdigit():
                    j += 1  # latex2sympy reads `x^23` as x**23, not TeX's x^2 * 3
                if self.s.startswith(".", j):
                    raise _Outside
                exponent, self.i = complex(int(self.s[self.i:j])), j
            else:
                raise _Outside
            if self.peek("^") or abs(exponent) > 1000:
                raise _Outside
            base = base ** exponent if exponent.imag or exponent.real != int(exponent.real) else _int_power(base, exponent)
        return base

    def symbol(self, name: str, end: int) -> complex:
        """`x_{0}`, `\\omega_n`, `\\theta`: one symbol, as latex2sympy reads them (case and braces aside)."""
        sub = _SUBSCRIPT.match(self.s, end)
        if self.s.startswith("_", end) and not sub:
            raise _Outside
        self.i = sub.end() if sub else end
        self.symbolic = True
        key = name + ("_" + (sub.group(1) or sub.group(2)) if sub else "")
        return _symbol_value(key, self.values)

    def group(self) -> complex:
        self.take("{")
        value = self.mp()
        self.take("}")
        return value

    def atom(self) -> complex:
        s, i = self.s, self.i
        if i >= len(s):
            raise _Outside
        ch = s[i]
        if ch.isdigit() or (ch == "." and i + 1 < len(s) and s[i + 1].isdigit()):
            j = i
            while j < len(s) and (s[j].isdigit() or s[j] == "."):
                j += 1
            mixed = _MIXED.match(s, i)
            if mixed and mixed.end(1) == j:  # latex2sympy reads `3\frac{1}{2}` as 7/2
                self.i = mixed.end()
                whole, num, den = (int(g) for g in mixed.groups())
                return complex(whole + num / den)
            if s.count(".", i, j) > 1 or s.startswith(("\\frac", "("), j) or j - i > 15:
                raise _Outside  # `2.5\frac{1}{2}`; latex2sympy reads `2(3)` as 5
            self.i = j
            return complex(float(s[i:j]))
        if ch.isascii() and ch.isalpha():
            applied = _APPLIED.match(s, i)
            if applied and ch not in "eEI":  # latex2sympy reads `u(t)` as an undefined function u at t
                self.i = applied.end()
                self.symbolic = True
                return _symbol_value("()" + applied.group(0), self.values)  # any value of u(t) will do
            if s.startswith(("'", "("), i + 1) or (s.startswith("_", i + 1) and ch in "eEI"):
                raise _Outside  # primes, f(x+1): functions we do not model; latex2sympy rejects `E_{1}`
            if s.startswith("_", i + 1):
                return self.symbol(ch, i + 1)
            self.i += 1
            # As latex2sympy reads letters: `e` is Euler's number, `I` the imaginary unit, `E` the
            # symbol e, `i` a symbol, other capitals their lower case, `dx` one symbol (ours: d*x,
            # one value of it, which is all a DIFFERENT verdict needs).
            if ch == "e":
                return complex(math.e)
            if ch == "I":
                return 1j
            self.symbolic = True
            return self.values[ch if ch in "Ei" else ch.lower()]
        if ch in "([":  # latex2sympy reads `[x+1]^2` as (x+1)**2
            self.i += 1
            value = self.mp()
            self.take(")" if ch == "(" else "]")
            return value
        if self.peek("\\frac{"):
            self.i += len("\\frac")
            num = self.group()
            return num / self.group()
        if self.peek("\\sqrt{"):
            self.i += len("\\sqrt")
            return cmath.sqrt(self.group())
        if self.peek("\\sqrt["):  # principal n-th root, as sympy's root()
            self.i += len("\\sqrt[")
            n = self.mp()
            self.take("]")
            if n == 0:
                raise ZeroDivisionError
            return self.group() ** (1 / n)
        if self.peek("\\binom{"):
            self.i += len("\\binom")
            n, k = self.group(), self.group()
            if any(v.imag or v.real != int(v.real) or not 0 <= v.real <= 1000 for v in (n, k)):
                raise _Outside
            return complex(float(math.comb(int(n.real), int(k.real))))
        if self.peek("\\exp{"):
            self.i += len("\\exp")
            return cmath.exp(self.group())
        greek = _GREEK.match(s, i)
        if greek:  # latex2sympy reads `\omegat` (`\omega t` without its space) as omega*t
            return self.symbol("\\" + greek.group(1), greek.end())
        for opening, closing, fn in (("\\lfloor", "\\rfloor", math.floor), ("\\lceil", "\\rceil", math.ceil)):
            if self.peek(opening):
                self.i += len(opening)
                value = self.mp()
                self.take(closing)
                if value.imag or abs(value.real - round(value.real)) < 1e-9:
                    raise _Outside  # at an integer, float rounding could pick the wrong side
                return complex(fn(value.real))
        if self.peek("\\pi"):  # latex2sympy reads `\pit` (`\pi t` without its space) as pi*t
            self.i += 3
            return complex(math.pi)
        for name, fn in _FUNCS.items():
            if not self.peek(name) or s[i + len(name):i + len(name) + 1].isalpha():
                continue
            self.i += len(name)
            power = None
            if self.peek("^"):  # `\sin^{2}(x)` is sin(x)**2
                self.i += 1
                power = self.group() if self.peek("{") else self.digit()
            if name == "\\log" and self.peek("_"):  # `\log_{2}(x)` is log(x, 2); a bare `\log` is base 10
                self.i += 1
                base = self.group() if self.peek("{") else self.digit()
                fn = lambda x, b=base: cmath.log(x) / cmath.log(b)  # noqa: E731
            if self.peek("("):
                self.i += 1
                value = fn(self.mp())
                self.take(")")
            else:  # `\sin{2t}`, `\sin^{2}\theta`: latex2sympy's argument runs on over implicit products
                value = fn(self.group() if self.peek("{") else self.atom())
                if self.i < len(self.s) and self.s[self.i] not in _STOPS:
                    raise _Outside  # `\sin x y` is sin(x*y): only a lone argument is read here
            return value if power is None else value ** power
        raise _Outside

    def digit(self) -> complex:
        if not (self.i < len(self.s) and self.s[self.i].isdigit()):
            raise _Outside
        self.i += 1
        return complex(int(self.s[self.i - 1]))


def _symbol_value(name: str, point: dict[str, complex]) -> complex:
    """A sample value for a named symbol: the same name (any case, any braces) gets the same value."""
    return point["a"] + 0.0017 * (zlib.crc32(name.lower().encode()) % 997) + (0.37j if name.startswith("()") else 0)


def _int_power(base: complex, exponent: complex) -> complex:
    n = int(exponent.real)
    if base == 0 and n < 0:
        raise ZeroDivisionError
    return base ** n


def _equation(s: str) -> tuple[str, str] | None:
    """(lhs, rhs) of `lhs=rhs` with a single `=` outside brackets (not `!=`, `<=`, `:=`), else None."""
    depth, at = 0, []
    for i, ch in enumerate(s):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "=":
            if depth or s[i - 1:i] in ("!", "<", ">", ":", "\\") or s[i + 1:i + 2] == "=":
                return None
            at.append(i)
    return (s[:at[0]], s[at[0] + 1:]) if len(at) == 1 else None


def _readable(s: str) -> bool:
    try:
        _Reader(s, _SAMPLES[0]).read()
    except (_Outside, ZeroDivisionError, OverflowError, ValueError, RecursionError):
        return False
    return True


def decide(pred: str, ref: str) -> Verdict | None:
    """EQUAL / DIFFERENT when both answers are plain expressions and their values settle it, else None.

    An equation of two plain expressions against a plain expression is DIFFERENT without values:
    latex2sympy reads the one as `Eq` and the other as an expression, which the slow path calls
    different whatever they are. (Two equations, or anything not plain, go to sympy.)"""
    p_eq, r_eq = _equation(pred), _equation(ref)
    if p_eq or r_eq:
        sides = (p_eq or (pred,)) + (r_eq or (ref,))
        return Verdict.DIFFERENT if not (p_eq and r_eq) and all(map(_readable, sides)) else None
    values, symbolic = [], False
    try:
        for point in _SAMPLES:
            readers = _Reader(pred, point), _Reader(ref, point)
            values.append(tuple(r.read() for r in readers))
            symbolic = symbolic or any(r.symbolic for r in readers)
    except (_Outside, ZeroDivisionError, OverflowError, ValueError, RecursionError):
        return None
    if not all(math.isfinite(v.real) and math.isfinite(v.imag) for pair in values for v in pair):
        return None
    if not symbolic:
        a, b = values[0]
        if any(abs(v.imag) > 1e-12 * max(1.0, abs(v)) for v in (a, b)):
            return None  # complex constants: sympy's simplify path decides
        gap, scale = abs(a.real - b.real), _N_TOL * max(abs(a.real), abs(b.real))
        if gap <= scale / _MARGIN:
            return Verdict.EQUAL
        return Verdict.DIFFERENT if gap > scale * _MARGIN else None
    for a, b in values:
        if abs(a - b) <= 10 * _PROBE_TOL * max(abs(a), abs(b), 1.0):
            return None
    return Verdict.DIFFERENT
