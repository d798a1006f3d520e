"""The benchmarks of the paper, their test sets and the selection sets. The math test sets ship
with the package under `data/` (pinned by `data/SHA256SUMS`); GPQA and MMLU-Pro cannot (GPQA is
gated, MMLU-Pro is large) and are read from a user's copy in the official format.

Each benchmark knows its question field and how its file stores the reference answer (the
table in data/README.md). `math` is the paper's MATH column: the 5,000-problem MATH test of
Qwen2.5-Math's evaluation, graded as that evaluation grades it (the last `\\boxed{}` of the
solution), stored gzipped; `math-500` is its 500-problem subset. The selection sets
(SELECTION_SETS) are for picking checkpoints, never for reporting.

An `eval.benchmarks` entry is a name, or `NAME:PATH` for a file of the user's own (Hydra takes
`eval.benchmarks=[math,gpqa:/data/gpqa_diamond.csv]` unquoted; `NAME=PATH` works quoted). A
directory in `paths.benchmarks` / `$CFT_BENCHMARKS` may hold NAME/test.jsonl or NAME/test.jsonl.gz,
and for the multiple-choice sets their official file names (`Benchmark.filenames`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
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
    # The files a benchmark directory may hold, in order of preference.
    filenames: tuple[str, ...] = ("test.jsonl", "test.jsonl.gz")
    # Multiple choice: the official format its file is in (cft.benchmarks.choice.FORMATS).
    choice: Optional[str] = None
    # A user's own copy (an `eval.benchmarks` entry `NAME:PATH`), read instead of the directory's.
    file: Optional[Path] = None

    def path(self, root: str | Path) -> Path:
        """The file to read: the user's own, else the first of `filenames` present under
        root/dirname (the first name when none is, for the message that says so)."""
        if self.file is not None:
            return self.file
        folder = Path(root) / self.dirname
        return next((folder / f for f in self.filenames if (folder / f).is_file()), folder / self.filenames[0])

    def missing(self, root: str | Path) -> Optional[str]:
        """Why this benchmark cannot be read from `root`, or None when its file is there."""
        path = self.path(root)
        if path.is_file():
            return None
        if self.choice and self.file is None:
            return (f"benchmark {self.name!r} does not ship: point eval.benchmarks at your copy in its "
                    f"official format, e.g. eval.benchmarks=[{self.name}:/data/{self.filenames[0]}]")
        if self.file is not None:
            return f"benchmark {self.name!r}: {path} not found (the file named in eval.benchmarks)"
        return f"benchmark {self.name!r}: {path} not found (set paths.benchmarks)"

    def load(self, root: str | Path, limit: int | None = None) -> list[dict]:
        """Rows as {idx, question, reference, answer_type} (multiple choice: the question with its
        lettered options, the reference a letter); a malformed line names file and line."""
        problem = self.missing(root)
        if problem:
            raise DataError(problem)
        path = self.path(root)
        if self.choice:
            from cft.benchmarks.choice import FORMATS

            return FORMATS[self.choice](path)[:limit]
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
        Benchmark("aime25", "aime25", "problem", lambda r: _number(r["answer"])),
        Benchmark("amc23", "amc23", "question", lambda r: _number(r["answer"])),
        Benchmark("theoremqa", "theoremqa", "problem", lambda r: str(r["answer"])),
        # Multiple choice, from a user's copy (cft.benchmarks.choice): GPQA Diamond's csv,
        # MMLU-Pro's test split (the HF parquet file, or its rows as JSON lines).
        Benchmark("gpqa", "gpqa", "Question", lambda r: None, choice="gpqa",
                  filenames=("gpqa_diamond.csv", "test.csv", "test.jsonl")),
        Benchmark("mmlu_pro", "mmlu_pro", "question", lambda r: None, choice="mmlu_pro",
                  filenames=("test.parquet", "test-00000-of-00001.parquet", "test.jsonl", "test.json")),
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
# Benchmarks that do not ship: their files are the user's (`NAME:PATH` or paths.benchmarks).
USER_SUPPLIED = tuple(name for name, b in BENCHMARKS.items() if b.choice)


# Other spellings in use (the paper's table headers, lm-eval / Qwen2.5-Math eval names).
ALIASES = {"math500": "math-500", "mathval": "math-validation", "minerva": "minerva_math",
           "minervamath": "minerva_math", "olympiad": "olympiadbench", "aime": "aime24",
           "aime2024": "aime24", "aime2025": "aime25", "amc": "amc23", "amc2023": "amc23", "gsm": "gsm8k",
           "gpqadiamond": "gpqa", "mmlupro": "mmlu_pro"}


def _squash(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


# `NAME:PATH` (Hydra parses it unquoted inside a list) or `NAME=PATH`.
_ENTRY = re.compile(r"^\s*([\w .-]+?)\s*[:=]\s*(\S.*?)\s*$")


def get_benchmark(name: str) -> Benchmark:
    """The benchmark an `eval.benchmarks` entry names, in any of its usual spellings (`math500`,
    `MATH-500`, ...); `NAME:PATH` binds it to the user's file at PATH (relative: to the working
    directory)."""
    entry = _ENTRY.match(name)
    name, file = (entry.group(1), entry.group(2)) if entry else (name, None)
    canonical = {_squash(k): k for k in BENCHMARKS}
    key = _squash(name)
    key = canonical.get(key) or ALIASES.get(key)
    if key is None:
        raise KeyError(f"eval.benchmarks: unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    if file is None:
        return BENCHMARKS[key]
    return replace(BENCHMARKS[key], file=Path(file).expanduser().resolve())


_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())
