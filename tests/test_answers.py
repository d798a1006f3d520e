"""Answer extraction and the in-process checker, on real benchmark lines and known failure cases."""
from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest

from cft.answers import Verdict, canonical_form, check, extract_answer, fast_check, normalize
from cft.answers.check import parse_number
from cft.answers.numeric import decide
from cft.answers.symbolic import clearly_different, compare_sympy, to_sympy
from cft.benchmarks import SHIPPED as BENCHMARKS
from cft.io import read_jsonl
from helpers import ROOT


def _rows(name: str) -> list[dict]:
    return read_jsonl(BENCHMARKS / name / "test.jsonl")


# -- extraction ----------------------------------------------------------------------------------
def test_math500_solutions_extract_to_their_reference_answer():
    hits = sum(check(extract_answer(r["solution"]), r["answer"]) == Verdict.EQUAL for r in _rows("math-500"))
    assert hits == 500  # measured: every MATH-500 solution's last \boxed{} is its `answer`


def test_minerva_solutions_have_a_closed_last_box():
    answers = [extract_answer(r["solution"]) for r in _rows("minerva_math")]
    assert all(a for a in answers)
    assert answers[0] == "1.6"  # `=\boxed{1.6} \mathrm{~cm}`


def test_gsm8k_answer_after_hashes():
    rows = _rows("gsm8k")
    expected = [r["answer"].split("####")[-1].strip().replace(",", "") for r in rows]
    assert [extract_answer(r["answer"], "gsm8k") for r in rows] == expected
    assert extract_answer("so she pays $1,200.\n#### 1,200", "gsm8k") == "1200"


@pytest.mark.parametrize("completion, expected", [
    (r"so $\boxed{\frac{1}{2}}$ and later \boxed{\left( 3, \frac{\pi}{2} \right)}.", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),
    (r"the answer: \fbox{42}", "42"),
    (r"\boxed 7$ done", "7"),
    (r"first \boxed{3}, then an unclosed \boxed{4", "3"),
    ("Thus, the final answer is $12$. I hope it is correct.", "12"),
    ("The answer is 0.5", "0.5"),
    ("The answer is: \\boxed{x+1}.", "x+1"),
    ("I do not know.", None),
    ("", None),
])
def test_extract_answer_forms(completion, expected):
    assert extract_answer(completion) == expected


@pytest.mark.parametrize("completion, expected", [
    ("Therefore, the answer is (C).", "C"),
    (r"The correct option is $\boxed{B}$", "B"),
    ("Answer: d", "D"),
])
def test_extract_choice_letter(completion, expected):
    assert extract_answer(completion, benchmark="gpqa") == expected


# -- checking: real references -------------------------------------------------------------------
def _references() -> list[str]:
    refs = [r["answer"] for r in _rows("math-500")]
    refs += [r["final_answer"][0] for r in _rows("olympiadbench")]
    refs += [str(r["answer"]) for name in ("theoremqa", "aime24", "amc23") for r in _rows(name)]
    return refs


def _cosmetic_variants(ref: str) -> list[str]:
    """Forms that differ only in what normalization removes."""
    return [f"${ref}$", f" {ref}. ", ref.replace("\\frac", "\\dfrac"), ref.replace(" ", "")]


def test_every_reference_equals_itself_and_its_cosmetic_variants():
    refs = _references()
    assert len(refs) == 2045
    failures = [(v, r) for r in refs for v in [r, *_cosmetic_variants(r)] if check(v, r) != Verdict.EQUAL]
    assert failures == []


def test_real_numeric_references_against_equivalent_and_wrong_values():
    numeric, failures = 0, []
    for ref in _references():
        plain = normalize(ref)
        m = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", plain)
        if m:
            value = int(m.group(1)) / int(m.group(2))
        elif re.fullmatch(r"-?\d+(\.\d+)?", plain):
            value = float(plain)
        else:
            continue
        numeric += 1
        for pred, expected in ((f"{value:.10g}", Verdict.EQUAL), (f"{value:.10g}\\text{{ units}}", Verdict.EQUAL),
                               (f"{value + max(1.0, abs(value) / 100):.10g}", Verdict.DIFFERENT)):
            if check(pred, ref) != expected:
                failures.append((pred, ref))
    assert numeric == 1488  # measured: numeric references across the 2045
    assert failures == []


def test_symbolic_numeric_and_textual_equivalents_are_equal():
    pairs = [
        (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}"), (r"2\sqrt{2}", r"\sqrt{8}"),
        (r"(x+1)^2", r"x^2+2x+1"), (r"\frac{\pi}{2}", "1.5708"), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi/2)"),
        (r"x = 3", "3"), (r"f(x)=2x", "2 x"), (r"\binom{2n}{n}", r"\frac{(2n)!}{(n!)^2}"),
        (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&4.0\end{pmatrix}"),
        ("1,3,5", "5, 3, 1"), (r"[-1, 1]", r"[-1,1]"), (r"90^\circ", "90"), (r"\$18.00", "18"),
        (r"50\%", "0.5"), ("1,000", "1000"), ("True", "True"), ("yes", "True"), ("(c)", "C"),
        ("10^{400}", "10^{400}"), ("1" + "0" * 400, "10^{400}"), ("4.5e33", r"4.5 \times 10^{33}"),
        ("4.5e33", r"4.5\times 10^{33}"), ("4.5E+33", r"4.5\times10^{33}"),
        ("4e-05", "0.00004"),  # TheoremQA writes small numbers this way
        ("2e", "2e"),  # Euler's e stays a symbol when not an exponent
    ]
    assert [(a, b) for a, b in pairs if check(a, b) != Verdict.EQUAL] == []


@pytest.mark.parametrize("pred, ref", [
    ("0.04", "0.01"),            # the Qwen grader rounds both to 0.0
    ("500", "5"),                # ... and accepts 500 for 5 through a percent rule
    ("0.5", "5"),
    ("3986729", "3986730"),      # integers compare exactly, not within the 1e-4 tolerance
    ("(0,5)", "[0,5]"),          # open vs closed interval
    ("1,3", "1,3,5"),
    ("False", "True"),
    (r"2^(2^(2))", "2"),          # never read a prefix: 2^(2^(2)) is 16
    ("10^{401}", "10^{400}"),
    ("4.6e33", r"4.5\times 10^{33}"),
    (r"\frac{1}{3}", "0.33"),
])
def test_known_traps_are_different(pred, ref):
    assert check(pred, ref) == Verdict.DIFFERENT


def test_unparsable_and_missing():
    assert check(None, "5") == Verdict.UNPARSABLE
    assert check(r"\frac{1}{", "5") in (Verdict.UNPARSABLE, Verdict.DIFFERENT)
    assert Verdict.EQUAL == "equal" and str(Verdict.TIMEOUT) == "timeout"


def test_import_is_cheap():
    code = "import sys, cft.answers; print(any(m in sys.modules for m in ('sympy', 'latex2sympy2_extended', 'math_verify')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# -- the fast path and the caches ----------------------------------------------------------------
def test_fast_path_agrees_with_the_full_check_on_real_references():
    refs = _references()  # against two of their cosmetic variants and their neighbours' references
    pairs = [(v, r) for r in refs for v in _cosmetic_variants(r)[:2]]
    pairs += [(refs[i - 1], r) for i, r in enumerate(refs)]
    fast = [fast_check(p, r) for p, r in pairs]
    decided = [(p, r, v) for (p, r), v in zip(pairs, fast) if v is not None]
    assert len(decided) > 0.8 * len(pairs)  # most real pairs never need sympy
    sample = decided[::7]  # the full check is slow: a spread sample
    assert [(p, r) for p, r, v in sample if check(p, r) != v] == []


def test_a_reference_is_parsed_once_for_many_predictions():
    to_sympy.cache_clear()
    verdicts = [check(f"x!!+{k}", "x!!+3") for k in range(2, 6)]  # a double factorial: beyond the value reader
    assert verdicts == [Verdict.DIFFERENT, Verdict.EQUAL, Verdict.DIFFERENT, Verdict.DIFFERENT]
    assert to_sympy.cache_info().misses == 4  # three predictions that needed sympy, and the reference once


@pytest.mark.parametrize("a, b, different", [
    ("x^2+1", "x^2+2", True),
    ("(x+1)^2", "x^2+2x+1", False),
    ("\\sqrt{x^2}", "x", False),  # equal at the sample points: sympy decides
    # `I(0)` (a value of an undefined function) gets sample values like a symbol
    ("s^{2}+bs+1", "I(0)e^{-\\frac{t}{RC}}", True),
    ("2I(0)", "I(0)+I(0)", False),
])
def test_symbolic_differences_are_found_without_simplify(a, b, different):
    assert clearly_different(to_sympy(a), to_sympy(b)) is different


def test_value_reader_agrees_with_sympy_on_real_references():
    refs = sorted({normalize(r) for r in _references() if re.search(r"[a-z\\]", normalize(r)) and "," not in r})
    rng = random.Random(0)
    decided = []
    for _ in range(4000):
        pair = rng.choice(refs), rng.choice(refs)
        verdict = decide(*pair)
        if verdict is not None:
            decided.append((*pair, verdict))
    assert len(decided) > 100
    sample = [d for d in decided if d[2] == Verdict.EQUAL][:5] + [d for d in decided if d[2] != Verdict.EQUAL][:25]
    assert [(p, r, v) for p, r, v in sample if compare_sympy(p, r) != v] == []


@pytest.mark.parametrize("pred, ref", [
    ("0.006", "\\frac{dx}{dt}=kx-a"),                   # Minerva/TheoremQA equations against a number
    ("5x-7y+11z+4=0", "\\frac{16}{5}"),
    ("2", "m\\frac{dv}{dt}+bv=f"),
])
def test_an_equation_against_an_expression_is_settled_without_sympy(pred, ref):
    assert fast_check(pred, ref) == Verdict.DIFFERENT
    assert compare_sympy(normalize(pred), normalize(ref)) == Verdict.DIFFERENT  # the slow path agrees
    assert fast_check("5!=120", "3") is None and fast_check("x+y=1", "y+x=1") is None  # `!=`, two equations: sympy



# -- canonical forms (maj@k grouping) ------------------------------------------------------------
def test_canonical_form_puts_one_number_written_many_ways_in_one_class():
    assert {canonical_form(a) for a in ("1/2", "0.5", "\\frac{1}{2}", "\\dfrac12", "$0.50$", "0.5.")} == {"1/2"}
    assert canonical_form("50\\%") == canonical_form("50.0%") != canonical_form("50")  # `%` is its own class
    assert canonical_form("x = 3") != canonical_form("3")  # equal, but not certainly so without the checker
    assert canonical_form("1" * 2_000) is None and canonical_form("It is blue and green") is None


def test_answers_with_one_canonical_form_are_equal_both_ways():
    answers = [a for r in _references() for a in [r, *_cosmetic_variants(r)]]
    answers += [f"{float(parsed[0]):.10g}" for r in _references() if (parsed := parse_number(normalize(r)))]
    classes: dict[str, list[str]] = {}
    for a in dict.fromkeys(answers):
        classes.setdefault(canonical_form(a), []).append(a)
    pairs = [(first, other) for form, (first, *rest) in classes.items() if form is not None for other in rest]
    assert len(pairs) > 2500  # measured: 2979 (the cosmetic variants and decimal forms of 2045 references)
    assert [(a, b) for a, b in pairs if check(a, b) != Verdict.EQUAL or check(b, a) != Verdict.EQUAL] == []
