"""Canonical string form of a final answer, before any parsing.

Removes what never changes an answer's value: math delimiters, `\\left`/`\\right`, spacing
commands, `\\text{}` wrappers and trailing units, `\\dfrac`/`\\tfrac`, degree marks, thousands
separators, a trailing period, and (on the prediction only) an `x =` prefix. A `%` is kept as a
plain `%` so the number checker can decide what it means. Linear in the length (no regex here can
backtrack more than linearly): it also runs on whole hostile answers in the grader's workers.
"""
from __future__ import annotations

import functools
import re

# Units that appear after numeric answers in MATH / Minerva / OlympiadBench / GSM8K.
_UNITS = (
    "degrees?", "cm", "centimeters?", "m", "meters?", "km", "kilometers?", "mm", "inches", "inch",
    "feet", "foot", "ft", "miles?", "mph", "units?", "square units", "sq units", "hours?", "minutes?",
    "seconds?", "days?", "weeks?", "years?", "dollars?", "cents?", "kg", "g", "grams?", "pounds?",
    "lbs?", "s", "sec", "J", "eV", "K", "Hz", "W", "N", "Pa", "V", "A", "nm", "Mpc", "pc", "AU",
    "mol", "L", "mL", "m/s", "km/s", "cm\\^\\{?-?\\d\\}?", "m\\^\\{?-?\\d\\}?", "points?",
    "people", "students?", "ways", "games", "marbles", "apples", "books",
)
_UNIT_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf|operatorname)\s*\{\s*(?:~\s*)?(?:" + "|".join(_UNITS) + r")\s*\}(?:\^\{?-?\d\}?)?\s*$")
_UNIT_PLAIN = re.compile(r"(?<=[\d}.])\s+(?:" + "|".join(u for u in _UNITS if len(u) >= 2 and "\\" not in u) + r")\s*$")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf|textit|operatorname)\s*\{([^{}]*)\}")
_SPACES = re.compile(r"(?<!\\)\\[,;:! ]|\\quad|\\qquad|~|\s+")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PREFIX = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?(?:\([a-z]\))?=(?!=)")
_DEGREES = re.compile(r"\^\{?\\circ\}?|\^\{?\\degree\}?|°|\\degree")


def strip_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left):len(s) - len(right)].strip()
    return s


@functools.lru_cache(maxsize=2**16)  # a reference is normalized once per prediction it meets
def normalize(answer: str, *, is_prediction: bool = False) -> str:
    """The canonical string of `answer` (see the module docstring)."""
    s = strip_delimiters(_strip_trailing_periods(str(answer).strip()))
    s = s.replace("\\$", "").replace("$", "")  # OlympiadBench writes `$a$, $b$` inside one answer
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\!", "")
    s = s.replace("\\%", "%").replace("{,}", ",").replace("\\cdot", "*").replace("\\times", "\\times ")
    s = _DEGREES.sub("", s)
    s = re.sub(r"\^\{\\prime\}|\^\\prime|\\prime", "'", s)
    s = _strip_trailing_periods(s)
    for _ in range(2):
        s = _UNIT_TEXT.sub("", s).strip()
    s = _UNIT_PLAIN.sub("", s) if re.search(r"\d", s) else s
    s = _TEXT_WRAP.sub(r"\1", s)
    s = _SPACES.sub("", s)
    if is_prediction and _PREFIX.match(s) and s.count("=") == 1:  # before the rules below: `x = 58,500`
        s = s.split("=", 1)[1]
    s = s.replace("\\{", "{").replace("\\}", "}") if s.startswith("\\{") else s
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if s.startswith("{") and s.endswith("}") and _balanced_inner(s):
        s = s[1:-1]
    return s.rstrip(".")


def _strip_trailing_periods(s: str) -> str:
    """`s` without trailing whitespace, `\\.` and `.`; an index walks back instead of slicing at each
    step, which is quadratic on a long run of periods."""
    if not s or not (s[-1] == "." or s[-1].isspace()):
        return s
    end = len(s)
    while True:
        before = end
        while end and s[end - 1].isspace():
            end -= 1
        if s.endswith("\\.", 0, end):
            end -= 2
        if s.endswith(".", 0, end):
            end -= 1
        while end and s[end - 1].isspace():
            end -= 1
        if end == before:
            return s[:end]


def _balanced_inner(s: str) -> bool:
    depth = 0
    for i, ch in enumerate(s):
        depth += (ch == "{") - (ch == "}")
        if depth == 0 and i < len(s) - 1:
            return False
    return depth == 0
