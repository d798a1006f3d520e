"""Final-answer extraction and equivalence checking: the leaf that data, critique and eval import.

- `extract_answer(completion, benchmark)`: the model's final answer string, or None.
- `check(prediction, reference, answer_type)`: in-process `Verdict` (may be slow on pathological input).
- `Grader(timeout, workers, checker)`: the same checks in worker processes with a hard per-pair timeout.
- `judge_free_text(summary, reference)`: conservative "right"/"wrong"/"unknown" for CHAMP's free text.

Importing this package is cheap: sympy, latex2sympy and math-verify load only when a check runs.
"""
from cft.answers.check import Verdict, check
from cft.answers.extract import extract_answer, extract_with_rule
from cft.answers.freetext import judge_free_text
from cft.answers.grader import Grader
from cft.answers.normalize import normalize

__all__ = ["Grader", "Verdict", "check", "extract_answer", "extract_with_rule", "judge_free_text", "normalize"]
