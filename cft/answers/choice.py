"""The option letter a model chose on a multiple-choice benchmark, read as the CFT paper's
evaluation read it (TIGER-AI-Lab/CritiqueFineTuning@44b83b8, `tools/scripts/evaluate.sh`):

- GPQA: `answer_clean` of `tools/evaluate_gpqa/utils.py` (MAmmoTH's), called by `run_open.py`
  with the triggers "The answer is:", "The answer is", "the answer is". When a trigger occurs
  more than once the completion is first cut at its first blank line (the script's few-shot
  guard); the text after the last trigger (or the whole text when none occurs) is upper-cased
  and its standalone letters A-D are collected; the first one after a trigger wins, else the
  last. Upper-casing makes the article "a" a letter, as it did there.
- MMLU-Pro: `extract_answer` -> `extract_again` -> `extract_final` of
  `tools/evaluate_mmlu-pro/evaluate_from_local.py` (the same three as TIGER-AI-Lab/MMLU-Pro's
  official `evaluate_from_local.py`): the first "answer is (X)", else the last "answer: X" of the
  first line holding one, else the last standalone letter A-J.

Where the official code returns a non-letter (GPQA's leftover text) it can never equal the
reference letter, so these return None there. MMLU-Pro's script credits a completion with no
letter by a seeded random guess (1 in #options); here it scores 0 and counts as rule "none".
The official `.*[aA]nswer:` and `\\b[A-J]\\b(?!.*\\b[A-J]\\b)` patterns rescan the text from every
start (quadratic on a long degenerate completion); the same answers are found here in one pass
(tests/test_multiple_choice.py compares them with the official patterns).
"""
from __future__ import annotations

import re

_GPQA_TRIGGERS = ("The answer is:", "The answer is", "the answer is")
_GPQA_SPLIT = re.compile("|".join(map(re.escape, _GPQA_TRIGGERS)))
_GPQA_LETTER = re.compile(r"\b(A|B|C|D)\b")

_MMLU_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
# A lookahead, so that a letter which starts the next "Answer:" is still seen as one.
_MMLU_ANSWER_COLON = re.compile(r"(?=[aA]nswer:\s*([A-J]))")
_MMLU_LETTER = re.compile(r"\b[A-J]\b")


def gpqa_letter(completion: str) -> tuple[str | None, str]:
    """(letter, rule) as the paper's GPQA evaluation extracted it; rule "choice" or "none"."""
    text = completion.strip("\n")
    if any(text.count(t) > 1 for t in _GPQA_TRIGGERS):
        text = text.split("\n\n")[0]
    parts = _GPQA_SPLIT.split(text)
    after_trigger = len(parts) > 1
    tail = parts[-1].strip("\n").rstrip(".").rstrip("/").strip(" ")
    letters = _GPQA_LETTER.findall(tail.upper())
    if not letters:
        return None, "none"
    return (letters[0] if after_trigger else letters[-1]), "choice"


def mmlu_pro_letter(completion: str) -> tuple[str | None, str]:
    """(letter, rule) as MMLU-Pro's official evaluation extracted it; rule "answer_is",
    "answer_colon", "last_letter" or "none"."""
    m = _MMLU_ANSWER_IS.search(completion)
    if m:
        return m.group(1), "answer_is"
    # `.*[aA]nswer:\s*([A-J])` without DOTALL: the last match starting on the first line that has one.
    found, line_end = None, -1
    for m in _MMLU_ANSWER_COLON.finditer(completion):
        if found is None:
            line_end = completion.find("\n", m.start())
        elif line_end != -1 and m.start() > line_end:
            break
        found = m.group(1)
    if found:
        return found, "answer_colon"
    letters = _MMLU_LETTER.findall(completion)
    return (letters[-1], "last_letter") if letters else (None, "none")


# Registry names of the benchmarks these read (cft.benchmarks), and their extractors.
CHOICE_EXTRACTORS = {"gpqa": gpqa_letter, "mmlu_pro": mmlu_pro_letter}
