"""Problems without responses (`dataset.loader=problems`): a question and its reference answer
per line, whose candidate solutions the data stage generates (`dataset.noisy_generators`).
One-Shot CFT's seed problem ships this way (cft/datasets/data/one-shot-pi1.jsonl).

A line is {"question" (or "problem"): str, "answer": str, "id": optional, "solution": optional}.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from cft.datasets import loader
from cft.io import DataError, iter_jsonl_lines
from cft.records import UNKNOWN, Record


@loader("problems")
def load_problems(cfg) -> Iterator[Record]:
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"dataset.path={cfg.path!r}: file not found")
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl_lines(path):
        question = row.get("question", row.get("problem"))
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{path}:{lineno}: needs a non-empty string `question` (or `problem`)")
        answer = row.get("answer")
        if answer is None or not str(answer).strip():
            raise DataError(f"{path}:{lineno}: needs `answer`: generated candidates are checked against it")
        rid = str(row.get("id", f"{path.stem}-{lineno}"))
        if rid in seen:
            raise DataError(f"{path}:{lineno}: id {rid!r} is already the id of line {seen[rid]}; ids must be unique")
        seen[rid] = lineno
        yield Record(id=rid, question=question, reference_answer=str(answer),
                     reference_solution=row.get("solution"), noisy_response=None,
                     noisy_source=f"problems:{path.name}", response_correct=UNKNOWN)
