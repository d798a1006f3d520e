"""Final-answer extraction in the official order (Qwen2.5-Math `parser.extract_answer`): Minerva's
form, \\boxed{}, "the answer is", "final answer is", then the last number; the rule that fired is
reported. tests/golden/extraction.json shows each case for a reviewer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft.answers import extract_answer, extract_with_rule

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
