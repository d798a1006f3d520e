"""Pull a model's final answer out of a free-form completion.

The rules are tried in the order of the official evaluation's `extract_answer` (Qwen2.5-Math
`evaluation/parser.py`, as used by the CFT paper), and the rule that fired is reported so a
reader can see how much of a score came from fallbacks:

  minerva     "final answer is $X$. I hope" (Minerva's few-shot form)
  boxed       the last `\\boxed{...}` / `\\fbox{...}` (nested braces handled)
  answer_is   the last "the answer is X" (official: "he answer is")
  final_answer_is  the last "final answer is X"
  gsm8k_hash  GSM8K's `#### X` (ours; the official falls through to the last number, the same X)
  last_number the last number in the completion (official fallback)
  choice      a multiple-choice letter (choice benchmarks only; GPQA and MMLU-Pro by the
              rules of the evaluation the paper ran, cft.answers.choice)
  none        nothing found

Each rule parses its span more carefully than the official split-on-substring (the answer ends
at the sentence end, `$...$` is unwrapped); pure string work, no heavy imports. Every rule is
linear in the length of the completion (a degenerate 1 MB completion full of unclosed `\\boxed{`
takes milliseconds): this runs in the data stage and in evaluation, where no timeout applies.
"""
from __future__ import annotations

import re

from cft.answers.choice import CHOICE_EXTRACTORS

CHOICE_BENCHMARKS = {"gpqa", "gpqa_diamond", "mmlu", "mmlu_pro", "mmlu-pro", "arc", "aqua", "sat_math"}

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?:\s*\{| +([^\s{$]+))")
_BRACE = re.compile(r"(?<!\\)[{}]")  # `\{` and `\}` are literal braces, not groups
# The answer runs to the first sentence end, newline, or the end of the text. It is matched a
# character at a time, except that a run of spaces not ending the line is taken whole: tried at
# each of its characters, "only whitespace up to the end" would rescan the run (quadratic time).
# The answers are those of `(.+?)(?:\.\s|\.?\s*$|\n)` with DOTALL, the form this replaces.
_SPAN = r"\s*(?:is|:|=)\s*:?\s*((?:\S|[^\S\n]+(?=\S|\n)|\s(?=\s*$))+?)(?:\.\s|\.?\s*$|\n)"
_ANSWER_IS = re.compile(r"the\s+answer" + _SPAN, re.IGNORECASE)
_FINAL_ANSWER_IS = re.compile(r"final\s+answer" + _SPAN, re.IGNORECASE)
_MINERVA_START, _MINERVA_END = "final answer is $", "$. I hope"
_NUMBER = re.compile(r"-?\d*\.?\d+")
_CHOICE_PATTERNS = [  # `\s*(?:is|:)?\s*:?\s*` written so that a run of spaces splits one way only
    re.compile(r"answer\s*(?:(?:is|:)\s*)?(?::\s*)?\(?\$?\\?(?:text\{|textbf\{)?\(?([A-J])\b", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])[).:]?\s*$"),
    re.compile(r"\(([A-J])\)"),
]


def _closing_braces(text: str, start: int, first_only: bool = False) -> dict[int, int]:
    """{index of `{`: index of its `}`} for the brace groups opening at or after `start`, in one
    pass; with `first_only`, stop once the group opening at `start` is closed."""
    closing, opened = {}, []
    for m in _BRACE.finditer(text, start):
        if m.group() == "{":
            opened.append(m.start())
        elif opened:
            closing[opened.pop()] = m.start()
            if first_only and not opened:
                break
    return closing


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{}` or `\\fbox{}` (also `\\boxed 5`); None if absent or unclosed."""
    starts = list(_BOX_START.finditer(text))
    if not starts:
        return None
    last = starts[-1]
    if last.group(1):  # `\boxed 5`: up to the next `$` or whitespace
        return last.group(1)
    closing = _closing_braces(text, last.end() - 1, first_only=True)  # usually closed: read no further
    if last.end() - 1 not in closing and len(starts) > 1:
        closing = _closing_braces(text, starts[0].end() - 1)  # match every brace once, not once per box
    for m in reversed(starts):
        if m.group(1):
            return m.group(1)
        end = closing.get(m.end() - 1)
        if end is not None:
            return text[m.end():end].strip()
    return None


def _minerva(text: str) -> str | None:
    """The last "final answer is $X$. I hope" (Minerva's few-shot form), non-overlapping as
    `re.findall(r"final answer is \\$(.+?)\\$\\. I hope", text, re.DOTALL)` reads them, but in
    linear time: that regex rescans the rest of the text from every unfinished start."""
    found, pos = None, 0
    while (start := text.find(_MINERVA_START, pos)) >= 0:
        content = start + len(_MINERVA_START)
        end = text.find(_MINERVA_END, content + 1)
        if end < 0:
            break
        found, pos = text[content:end], end + len(_MINERVA_END)
    return found


def _answer_is(text: str, pattern: re.Pattern = _ANSWER_IS) -> str | None:
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group(1).strip()
    inner = last_boxed(answer)
    if inner is not None:
        return inner
    answer = answer.strip().rstrip(".").strip()
    if len(answer) >= 2 and answer[0] == answer[-1] == "$":
        answer = answer.strip("$").strip()
    return answer or None


def _choice_letter(text: str) -> str | None:
    boxed = last_boxed(text)
    candidates = [boxed] if boxed is not None else []
    candidates.append(text)
    for candidate in candidates:
        for pattern in _CHOICE_PATTERNS:
            found = pattern.findall(candidate)
            if found:
                return found[-1].upper()
    return None


def extract_with_rule(completion: str, benchmark: str | None = None,
                      last_number: bool = True) -> tuple[str | None, str]:
    """(answer, rule): the final answer in `completion` (None if it states none) and the name of
    the rule that found it (see the module docstring), tried in the official order.

    `benchmark` turns on forms that only make sense there: GSM8K's `#### 42`, and a single
    letter for multiple-choice benchmarks (names in CHOICE_BENCHMARKS).
    """
    if not completion:
        return None, "none"
    name = (benchmark or "").lower()
    if name in CHOICE_EXTRACTORS:  # GPQA, MMLU-Pro: as the paper's evaluation read them (cft.answers.choice)
        return CHOICE_EXTRACTORS[name](completion)
    if name in CHOICE_BENCHMARKS:
        letter = _choice_letter(completion)
        return letter, "choice" if letter else "none"
    minerva = _minerva(completion)
    if minerva and minerva.strip():
        return minerva.strip(), "minerva"
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed, "boxed"
    for rule, pattern in (("answer_is", _ANSWER_IS), ("final_answer_is", _FINAL_ANSWER_IS)):
        answer = _answer_is(completion, pattern)
        if answer is not None:
            return answer, rule
    if name == "gsm8k" and "####" in completion:
        answer = completion.rsplit("####", 1)[1].strip().split("\n")[0].strip()
        answer = answer.replace(",", "").rstrip(".")
        if answer:
            return answer, "gsm8k_hash"
    if last_number:
        numbers = _NUMBER.findall(completion.replace(",", ""))
        if numbers:
            return numbers[-1], "last_number"
    return None, "none"


def extract_answer(completion: str, benchmark: str | None = None, last_number: bool = True) -> str | None:
    """The final answer in `completion`, or None if it states none (see `extract_with_rule`).
    `last_number=False` turns off the last-number fallback, for answers that must be stated."""
    return extract_with_rule(completion, benchmark, last_number)[0]
