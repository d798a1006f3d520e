"""The checker's last stage: latex2sympy + sympy, for what strings and plain numbers cannot decide.

Two things keep it fast without changing a verdict:
- parsed answers are cached (`to_sympy`): one benchmark reference meets many predictions under
  pass@k and checkpoint selection, and latex2sympy's parse costs milliseconds;
- before `sympy.simplify` (tens to thousands of milliseconds), both sides are evaluated at two
  sample points (`clearly_different`). Where they differ there, `a - b` is not identically zero,
  so neither `simplify(a - b) == 0` nor `a.equals(b)` could hold and the answer is DIFFERENT, as
  the slow path would have said. Where evaluation fails or agrees, the slow path runs unchanged.
"""
from __future__ import annotations

import functools

from cft.answers.guards import costly
from cft.answers.numeric import decide
from cft.answers.verdict import Verdict

_PROBE_TOL = 1e-6

# Sample values for the free symbols (sorted by name): generic reals, away from 0, 1 and small
# integers where denominators and logarithms vanish.
_POINTS = ((1.2345, 0.5772, 2.7183, 1.6180, 0.3183, 1.4142), (2.1718, 1.3863, 0.8047, 3.1416, 1.7321, 0.6931))


@functools.lru_cache(maxsize=4096)
def to_sympy(s: str):
    """The sympy object of a normalized answer (latex2sympy, then sympy's own parser), or None."""
    from latex2sympy2_extended import latex2sympy

    try:
        return latex2sympy(s)
    except Exception:
        if "\\" in s:
            return None
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application, parse_expr, standard_transformations)

    try:
        return parse_expr(s.replace("^", "**"), evaluate=False,
                          transformations=standard_transformations + (implicit_multiplication_application,))
    except Exception:
        return None


def clearly_different(a, b) -> bool:
    """True when expressions `a` and `b` take clearly different finite values at both sample points.

    An undefined function at a point (`I(0)`, `y(t)`) is an opaque value to `simplify` and
    `equals` as much as a symbol is, so it gets a sample value like one."""
    from sympy import Dummy
    from sympy.core.function import AppliedUndef

    applied = sorted(a.atoms(AppliedUndef) | b.atoms(AppliedUndef), key=str)
    if applied:
        opaque = {f: Dummy(str(f)) for f in applied}
        a, b = a.xreplace(opaque), b.xreplace(opaque)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if len(symbols) > len(_POINTS[0]):
        return False
    for point in _POINTS:
        subs = dict(zip(symbols, point))
        try:
            av, bv = complex(a.evalf(30, subs=subs)), complex(b.evalf(30, subs=subs))
        except Exception:
            return False
        if not all(abs(v) < float("inf") and v == v for v in (av, bv)):
            return False
        if abs(av - bv) <= _PROBE_TOL * max(abs(av), abs(bv), 1.0):
            return False
    return True


def _simplifies_to_zero(a, b) -> bool:
    import sympy

    return not clearly_different(a, b) and sympy.simplify(a - b) == 0


def compare_symbolic(pred: str, ref: str) -> Verdict:
    """The guards' verdict, else the plain-value reader's, else sympy's (`compare_sympy`)."""
    return costly(pred) or costly(ref) or decide(pred, ref) or compare_sympy(pred, ref)


def compare_sympy(pred: str, ref: str) -> Verdict:
    """EQUAL / DIFFERENT by latex2sympy + sympy; UNPARSABLE when a side does not parse."""
    import sympy

    a, b = to_sympy(pred), to_sympy(ref)
    if a is None or b is None or not isinstance(a, sympy.Basic) or not isinstance(b, sympy.Basic):
        return Verdict.UNPARSABLE
    if isinstance(a, sympy.Eq) or isinstance(b, sympy.Eq):
        if not (isinstance(a, sympy.Eq) and isinstance(b, sympy.Eq)):
            return Verdict.DIFFERENT
        a, b = a.lhs - a.rhs, b.lhs - b.rhs
        if _simplifies_to_zero(a, b) or _simplifies_to_zero(a, -b):
            return Verdict.EQUAL
    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return Verdict.EQUAL if a == b else Verdict.DIFFERENT
    if a == b:
        return Verdict.EQUAL
    if not a.free_symbols and not b.free_symbols:
        av, bv = sympy.N(a, 30), sympy.N(b, 30)
        if av.is_real and bv.is_real and av.is_finite and bv.is_finite and av.is_number and bv.is_number:
            return Verdict.EQUAL if abs(av - bv) <= 1e-4 * max(abs(av), abs(bv)) else Verdict.DIFFERENT
    if clearly_different(a, b):
        return Verdict.DIFFERENT
    if sympy.simplify(a - b) == 0 or a.equals(b):
        return Verdict.EQUAL
    return Verdict.DIFFERENT
