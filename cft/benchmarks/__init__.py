"""The math benchmarks of the paper (+ TheoremQA, GPQA/MMLU-Pro by user path), their test sets
and the selection sets, which ship with the package under `data/` (pinned by `data/SHA256SUMS`).

Each benchmark knows its question field and how its file stores the reference answer (the
table in data/README.md). `math` is the paper's MATH column: the 5,000-problem MATH test of
Qwen2.5-Math's evaluation, graded as that evaluation grades it (the last `\\boxed{}` of the
solution); `math-500` is its 500-problem subset. The selection sets (SELECTION_SETS) are for
picking checkpoints, never for reporting.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from cft.io import DataError, iter_jsonl

# The shipped test sets: the default of `paths.benchmarks` (or $CFT_BENCHMARKS).
SHIPPED = Path(__file__).resolve().parent / "data"


def _last_boxed(text: str) -> Optional[str]:
    from cft.answers import extract_answer

    return extract_answer(text, last_number=False)


def _olympiad(row: dict) -> str:
    answer = row["final_answer"][0]
    return answer.strip().strip("$").strip()


def _gsm8k(row: dict) -> str:
    return row["answer"].split("####")[-1].strip().replace(",", "")


def _number(value) -> str:
    """AMC23 stores 27.0 for 27."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Benchmark:
    name: str
    dirname: str
    question_field: str
    reference: Callable[[dict], Optional[str]]
    answer_type: Optional[str] = None

    def path(self, root: str | Path) -> Path:
        return Path(root) / self.dirname / "test.jsonl"

    def load(self, root: str | Path, limit: int | None = None) -> list[dict]:
        """Rows as {idx, question, reference}; a malformed line names file and line."""
        path = self.path(root)
        if not path.exists():
            raise DataError(f"benchmark {self.name!r}: {path} not found (set paths.benchmarks)")
        items = []
        for i, row in enumerate(iter_jsonl(path)):
            if limit is not None and i >= limit:
                break
            question = row.get(self.question_field) or row.get("problem") or row.get("question")
            if not isinstance(question, str):
                raise DataError(f"{path}:{i + 1}: no question field {self.question_field!r}")
            items.append({"idx": i, "question": question, "reference": self.reference(row),
                          "answer_type": self.answer_type or row.get("answer_type")})
        return items


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("math", "math", "problem", lambda r: _last_boxed(r["solution"])),
        Benchmark("math-500", "math-500", "problem", lambda r: str(r["answer"])),
        Benchmark("minerva_math", "minerva_math", "problem", lambda r: _last_boxed(r["solution"])),
        Benchmark("gsm8k", "gsm8k", "question", _gsm8k),
        Benchmark("olympiadbench", "olympiadbench", "question", _olympiad),
        Benchmark("aime24", "aime24", "problem", lambda r: _number(r["answer"])),
        Benchmark("amc23", "amc23", "question", lambda r: _number(r["answer"])),
        Benchmark("theoremqa", "theoremqa", "problem", lambda r: str(r["answer"])),
        # Selection sets. math-validation: 500 MATH *train* problems, disjoint from every test
        # set here (the default eval.select_benchmark). math-500-validation: One-Shot CFT's 500
        # MATH *test* problems outside MATH-500 (disjoint from MATH-500, inside MATH).
        Benchmark("math-validation", "math-validation", "problem", lambda r: str(r["answer"])),
        Benchmark("math-500-validation", "math-500-validation", "problem", lambda r: _last_boxed(r["solution"])),
    ]
}
# The six benchmarks of the paper's main table (Table 2), in its column order: MATH is the
# 5,000-problem test (the paper reports MATH-500 only where it says so, e.g. beside SimpleRL).
PAPER_BENCHMARKS = ["math", "minerva_math", "gsm8k", "olympiadbench", "aime24", "amc23"]
# Sets for checkpoint selection, not for reporting.
SELECTION_SETS = ("math-validation", "math-500-validation")


# Other spellings in use (the paper's table headers, lm-eval / Qwen2.5-Math eval names).
ALIASES = {"math500": "math-500", "mathval": "math-validation", "minerva": "minerva_math",
           "minervamath": "minerva_math", "olympiad": "olympiadbench", "aime": "aime24",
           "aime2024": "aime24", "amc": "amc23", "amc2023": "amc23", "gsm": "gsm8k"}


def _squash(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`, in any of its usual spellings (`math500`, `MATH-500`, ...)."""
    canonical = {_squash(k): k for k in BENCHMARKS}
    key = _squash(name)
    key = canonical.get(key) or ALIASES.get(key)
    if key is None:
        raise KeyError(f"eval.benchmarks: unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[key]


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())
