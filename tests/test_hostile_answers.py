"""Hostile answers never hold up the calling process, where the Grader's timeout does not apply.

Issue #21: numbers of thousands of digits, plain and in `\\frac{..}{..}`, kept an evaluation in
the calling process for minutes (`parse_number`'s regex backtracked, `Fraction` worked on huge
integers). The fast path now reads only answers within `check.FAST_MAX_*` (length, bracket depth,
commas) and leaves the rest to the workers, so its time is bounded by construction. These tests
fuzz that bound with generated shapes; bench/hostile_inputs.py times the full hostile set.
"""
from __future__ import annotations

import random
import time

from cft.answers import Grader, Verdict, canonical_form, check, fast_check
from cft.answers.check import FAST_MAX_CHARS
from cft.answers.guards import MAX_CHARS
from hostile_answers import REFERENCES, families, hostile_pairs

NOT_HUNG = 0.5  # seconds for one pair in the calling process; the worst measured is about 5 ms

# Pieces of answers whose repetition drives a naive parser superlinear: digit runs, nesting,
# operators, separators, whitespace, e-notation, unicode digits and marks.
_TOKENS = ["9" * 60, "1", "0", ".", "-", "+", "*", "/", "^", "^{", "{", "}", "(", ")", "[", "]", ",", "=", "!", "%",
           "e", "E", "e-", "x", " ", "\\,", "\\frac{", "\\frac", "\\sqrt{", "\\binom{", "\\times10^{", "\\text{",
           "\\left(", "\\right)", "\\pi", "\\cup", "&", "\\\\", "\\begin{pmatrix}", "\\end{pmatrix}", "\\.", "~",
           "\\{", "\\}", "x=", "٣", "²", "½", "\u0301"]


def fuzzed_answers(n: int = 1500, seed: int = 0) -> list[str]:
    """Answers at the fast path's sizes: each hostile answer cut to FAST_MAX_CHARS and to the
    guards' MAX_CHARS (the longest the value reader sees), and `n` random token strings as long,
    half of them one short unit repeated."""
    rng = random.Random(seed)
    out = [a[:limit] for answers in families(0.05, seed).values() for a in answers for limit in (FAST_MAX_CHARS, MAX_CHARS)]
    for _ in range(n):
        size = rng.choice((MAX_CHARS, FAST_MAX_CHARS, rng.randint(1, MAX_CHARS)))
        if rng.random() < 0.5:
            unit = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 4)))
            text = unit * (size // len(unit) + 1)
        else:
            text = "".join(rng.choice(_TOKENS) for _ in range(size))
        out.append(text[:size])
    return list(dict.fromkeys(out))


def test_fast_path_time_is_bounded_for_every_shape():
    answers = fuzzed_answers()
    rng = random.Random(1)
    slowest = (0.0, "", "")
    for a in answers:
        for b in (rng.choice(REFERENCES), a, rng.choice(answers)):
            start = time.perf_counter()
            fast_check(a, b)
            canonical_form(a)
            slowest = max(slowest, (time.perf_counter() - start, a, b))
    assert slowest[0] < NOT_HUNG, slowest


def test_long_numbers_and_fractions_go_to_the_workers_and_grade_there():
    digits = "".join(random.Random(0).choice("0123456789") for _ in range(20_000))
    big, frac = "7" + digits, f"\\frac{{3{digits[:1_500]}}}{{7{digits[1_500:3_000]}}}"
    pairs = [(big, big), (big, "2"), (frac, frac), (frac, f"\\frac{{3{digits[:1_500]}}}{{7{digits[1_500:3_000]}1}}"),
             ("1" * 3_000, "1" * 2_999 + "2"), (frac, "0.5")]
    assert [fast_check(p, r) for p, r in pairs] == [None] * len(pairs)  # beyond the fast path's sizes
    with Grader(timeout=5.0, workers=1) as grader:
        verdicts = grader.grade(pairs)
    assert max(grader.local_durations) < NOT_HUNG and grader.stats["killed"] == 0
    assert verdicts == [Verdict.EQUAL, Verdict.UNPARSABLE, Verdict.EQUAL, Verdict.DIFFERENT, Verdict.DIFFERENT,
                        Verdict.DIFFERENT]


def test_hostile_set_grades_with_the_calling_process_bounded():
    pairs = hostile_pairs(scale=0.1)  # numbers of 100 to 5,000 digits and the fuzzed shapes
    with Grader(timeout=2.0, workers=2) as grader:
        verdicts = grader.grade(pairs)
    assert max(grader.local_durations) < NOT_HUNG
    assert [(a, v) for (a, b), v in zip(pairs, verdicts) if a == b and v != Verdict.EQUAL] == []  # however long
    assert grader.stats["fast_path"] > 0.3 * len(pairs) and grader.stats["crashed"] == 0


def test_e_notation_beyond_exact_reading_is_a_number_too_large_not_eulers_e():
    assert check("1e99999999999", "1e99999999990") == Verdict.TIMEOUT  # was read as 1*E*99999999999: equal
    assert fast_check("9.9e10001", "9.9e10000") == Verdict.TIMEOUT
    assert fast_check("4.5e33", "4.5\\times 10^{33}") == Verdict.EQUAL and check("2e", "2e") == Verdict.EQUAL
