"""Final-answer extraction in the official order (Qwen2.5-Math `parser.extract_answer`): Minerva's
form, \\boxed{}, "the answer is", "final answer is", then the last number; the rule that fired is
reported. tests/golden/extraction.json shows each case for a reviewer. Every rule is linear in the
length of the completion, and reads what the quadratic forms it replaced read."""
from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest

from cft.answers import extract, extract_answer, extract_with_rule
from hostile_answers import COMPLETIONS, hostile_completion

CASES = json.loads((Path(__file__).parent / "golden" / "extraction.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["rule"] + f"-{i}" for i, c in enumerate(CASES)])
def test_extraction_follows_the_official_order_and_names_the_rule(case):
    assert extract_with_rule(case["completion"]) == (case["answer"], case["rule"])


def test_boxed_wins_over_answer_is_and_answer_is_over_last_number():
    text = "The answer is 5, checking 7 and 9. So \\boxed{6}"
    assert extract_with_rule(text) == ("6", "boxed")
    assert extract_with_rule("The answer is 5, but we also computed 9.") == ("5, but we also computed 9", "answer_is")


def test_gsm8k_hash_and_choice_letters():
    assert extract_with_rule("3 + 4 = 7\n#### 7", "gsm8k") == ("7", "gsm8k_hash")
    assert extract_with_rule("So the correct option is (B).", "gpqa") == ("B", "choice")


def test_data_side_callers_can_refuse_to_guess():
    """Verifying a noisy response must not call a stray number its answer."""
    assert extract_answer("12 + 5 = 17 dollars", last_number=False) is None
    assert extract_answer("12 + 5 = 17 dollars") == "17"


# -- linear time on degenerate completions (issue #25) -------------------------------------------
# The forms the linear rules replaced, kept as their specification: on short texts, where their
# quadratic scans cost nothing, the rules must read exactly what these read.
_SPAN = r"\s*(?:is|:|=)\s*:?\s*(.+?)(?:\.\s|\.?\s*$|\n)"
_SPEC = {"answer_is": re.compile(r"the\s+answer" + _SPAN, re.IGNORECASE | re.DOTALL),
         "final_answer_is": re.compile(r"final\s+answer" + _SPAN, re.IGNORECASE | re.DOTALL),
         "minerva": re.compile(r"final answer is \$(.+?)\$\. I hope", re.DOTALL),
         "choice": re.compile(r"answer\s*(?:is|:)?\s*:?\s*\(?\$?\\?(?:text\{|textbf\{)?\(?([A-J])\b", re.IGNORECASE)}
_PIECES = [" ", "  ", "\n", "\t", ".", ". ", "\\", "{", "}", "\\{", "\\}", "\\boxed{", "\\boxed ", "\\fbox{", "the answer is",
           "The Answer", "answer", " is ", ":", "=", "final answer", "final answer is $", "$. I hope", "$", "x", "42",
           "(B)", "A", "\u00a0"]


def _spec_last_boxed(text: str) -> str | None:
    """The last closed box, each scanned from its own brace (quadratic when many are unclosed)."""
    for m in reversed(list(extract._BOX_START.finditer(text))):
        if m.group(1):
            return m.group(1)
        depth = 0
        for i in range(m.end() - 1, len(text)):
            if text[i] in "{}" and text[i - 1] != "\\":
                depth += 1 if text[i] == "{" else -1
                if depth == 0:
                    return text[m.end():i].strip()
    return None


def test_linear_rules_read_what_the_forms_they_replace_read():
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))
        assert extract.last_boxed(text) == _spec_last_boxed(text), text
        assert extract._minerva(text) == ([None] + _SPEC["minerva"].findall(text))[-1], text
        for rule, pattern in (("answer_is", extract._ANSWER_IS), ("final_answer_is", extract._FINAL_ANSWER_IS)):
            assert [m.group(1) for m in pattern.finditer(text)] == [m.group(1) for m in _SPEC[rule].finditer(text)], text
        assert extract._CHOICE_PATTERNS[0].findall(text) == _SPEC["choice"].findall(text), text


@pytest.mark.parametrize("name", COMPLETIONS)
def test_a_1mb_degenerate_completion_is_read_in_linear_time(name):
    text, benchmark, expected = hostile_completion(name, 1_000_000)
    start = time.perf_counter()
    got = extract_with_rule(text, benchmark)
    assert time.perf_counter() - start < 5.0  # not hung: the quadratic scans took an hour and more here
    assert got == expected == extract_with_rule(*hostile_completion(name, 200)[:2])
