"""judge_free_text on CHAMP's free-text references and one-sentence model summaries."""
from __future__ import annotations

import pytest

from cft.datasets.champ_judge import judge_free_text, reference_values


@pytest.mark.parametrize("reference, kind", [
    ("C(10, 5), or equivalently 252", "number"), ("3 is the only possible value", "number"),
    ("The limit exists and is equal to 2/3", "number"), ("100 (i.e., all values)", "number"),
    ("sqrt(3)/3, or equivalently 1/sqrt(3)", "number"), ("2^(n-1)", "expr"), ("No", "bool"),
    ("No integer solutions", None), ("At least 1 number", None), ("x=±1, ±2, ±1/2", None),
    ("376 and 625", None), ("5/14, or approximately 35.7%", "number"),
])
def test_reference_reduces_only_when_simple(reference, kind):
    reduced = reference_values(reference)
    assert (reduced[0] if reduced else None) == kind


@pytest.mark.parametrize("summary, reference, expected", [
    ("There are 252 strings of length 5 using the digits {0, 1, ..., 9} that have strictly increasing digits.",
     "C(10, 5), or equivalently 252", "right"),
    ("There are 29 valid strings of length 6 that satisfy the condition.", "C(10, 5), or equivalently 252", "wrong"),
    ("There are 144 ways to tile a 2 x 21 rectangle with 2 x 1 tiles.", "89", "wrong"),
    ("The possible values of abcde mod 5 are 1 and 4.", "0 is the only possible value", "wrong"),
    ("The possible values of abcde mod 5 are 0 or 1.", "0 is the only possible value", "unknown"),  # partly right
    ("The smallest value is $\\boxed{\\frac{3}{2}}$.", "3/2", "right"),
    ("The integer part of the sum is $\\boxed{0}$.", "1", "wrong"),
    ("The smallest value of $(1+a/b)^m$ is $\\boxed{2^m}$.", "2^(m+1)", "wrong"),
    ("The expression equals \\( x^2 + y^2 = \\frac{a^2}{3} + \\frac{2b}{3a} \\).", "(a^3+2b)/(3a)", "right"),
    ("No, it is not possible to label the edges of a cube so.", "No", "right"),
    ("Yes, a polyhedron exists with an odd number of faces.", "No", "wrong"),
    ("The answer cannot be 5.", "5", "unknown"),                       # negated claim
    ("There are no such sequences.", "0", "unknown"),                 # no number stated
    ("The sequence has no prime numbers.", "There are no prime numbers in the sequence", "unknown"),
    ("The minimum is 2 when n > 3.", "2", "right"),                   # 3 is a condition, not a claim
    ("", "2", "unknown"),
])
def test_judge_free_text(summary, reference, expected):
    assert judge_free_text(summary, reference) == expected


def test_question_numbers_are_context_not_answers():
    summary = "For 6 digits the count is 29."
    assert judge_free_text(summary, "6", question="Count strings of 6 digits.") == "wrong"


def test_real_champ_conversations_are_judged_conservatively():
    champ_dataset = pytest.importorskip("champ_dataset")
    problem = champ_dataset.load("v0").problems["P_Combinatorics_2"]
    verdicts = [judge_free_text(c.messages[-1].text or "", problem.answer, question=problem.text)
                for c in problem.conversations.values()]
    assert len(verdicts) == 72 and set(verdicts) <= {"right", "wrong", "unknown"}
    assert verdicts.count("right") >= 1 and verdicts.count("wrong") >= 1
