"""Pull a model's final answer out of a free-form completion.

Priority: the last `\\boxed{...}` / `\\fbox{...}` (nested braces handled), then the last
"the (final) answer is X", then benchmark-specific forms (GSM8K `#### X`, a multiple-choice
letter). Pure string work, no heavy imports.
"""
from __future__ import annotations

import re

CHOICE_BENCHMARKS = {"gpqa", "gpqa_diamond", "mmlu", "mmlu_pro", "mmlu-pro", "arc", "aqua", "sat_math"}

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?:\s*\{| +([^\s{$]+))")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)\s*:?\s*(.+?)(?:\.\s|\.?\s*$|\n)",
    re.IGNORECASE | re.DOTALL,
)
_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)?\s*:?\s*\(?\$?\\?(?:text\{|textbf\{)?\(?([A-J])\b", re.IGNORECASE),
    re.compile(r"^\s*\(?([A-J])[).:]?\s*$"),
    re.compile(r"\(([A-J])\)"),
]


def _braced(text: str, open_at: int) -> tuple[str, int] | None:
    """The content of the brace group opening at `open_at` and the index after it."""
    depth = 0
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{}` or `\\fbox{}` (also `\\boxed 5`); None if absent or unclosed."""
    for m in reversed(list(_BOX_START.finditer(text))):
        if m.group(1):  # `\boxed 5`: up to the next `$` or whitespace
            return m.group(1)
        got = _braced(text, m.end() - 1)
        if got is not None:
            return got[0].strip()
    return None


def _answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
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


def extract_answer(completion: str, benchmark: str | None = None) -> str | None:
    """The final answer in `completion`, or None if it states none.

    `benchmark` turns on forms that only make sense there: GSM8K's `#### 42`, and a single
    letter for multiple-choice benchmarks (names in CHOICE_BENCHMARKS).
    """
    if not completion:
        return None
    name = (benchmark or "").lower()
    if name in CHOICE_BENCHMARKS:
        return _choice_letter(completion)
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed
    if name == "gsm8k" and "####" in completion:
        answer = completion.rsplit("####", 1)[1].strip().split("\n")[0].strip()
        return answer.replace(",", "").rstrip(".") or None
    return _answer_is(completion)
