"""Final-answer extraction and equivalence checking: the leaf that data, critique and eval import.

- `extract_answer(completion, benchmark)`: the model's final answer string, or None.
- `check(prediction, reference)`: in-process `Verdict` (guarded, but may be slow on pathological input).
- `fast_check(prediction, reference)`: `check`'s verdict where no sympy is needed, else None.
- `canonical_form(answer)`: one string per class of certainly-equal answers (maj@k grouping), or None.
- `Grader(timeout, workers, checker)`: cache -> fast path -> the full check in worker processes with
  a hard per-pair timeout; `Grader.run(function, items, fallback)` runs a caller's own judge there too.

Importing this package is cheap: sympy, latex2sympy and math-verify load only when a check runs.
"""
from cft.answers.check import canonical_form, check, fast_check
from cft.answers.extract import extract_answer, extract_with_rule
from cft.answers.grader import Grader
from cft.answers.normalize import normalize
from cft.answers.verdict import Verdict

__all__ = ["Grader", "Verdict", "canonical_form", "check", "fast_check", "extract_answer", "extract_with_rule",
           "normalize"]
