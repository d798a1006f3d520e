"""Multiple-choice benchmarks that cannot ship, read from a user's own copy in the official format
and laid out as the CFT paper's evaluation laid them out (TIGER-AI-Lab/CritiqueFineTuning@44b83b8,
`tools/scripts/evaluate.sh`, zero-shot).

GPQA (Diamond): the csv of the official release (idavidrein/gpqa, `gpqa_diamond.csv` in its
zip, the same file as the gated HF dataset Idavidrein/gpqa), or the same rows as JSON lines (as
the CFT repository keeps them). Its correct answer is always the column `Correct Answer`, so the
options are shuffled: as GPQA's own baselines do (`baselines/utils.py`, `load_examples`: one
`random.seed(0)`, then per row, in file order, `random.shuffle` of [Incorrect Answer 1,
Incorrect Answer 2, Incorrect Answer 3, Correct Answer]). The CFT evaluation shuffled with an
unseeded `random.sample` (`tools/evaluate_gpqa/data_loader.py`), so its order cannot be
reproduced; the question text is laid out as it laid it out: the question, a newline unless it
ends in one, "Answer Choices: " and "(A) ..." options joined by spaces.

MMLU-Pro: the test split of the HF dataset TIGER-Lab/MMLU-Pro (its parquet file, or JSON lines
/ a JSON list of the same rows: question, options, answer, answer_index, cot_content, category,
src). Options "N/A" are dropped and the user turn is "Question:\\n{question}\\nOptions:\\nA. ...\\n"
then "Answer: Let's think step by step.\\n", as `tools/evaluate_mmlu-pro/evaluate_from_local.py`
(0 shots) builds it.

Both are validated whole before any work: a missing column or a malformed row raises DataError
naming the file and the row.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Iterator

from cft.io import DataError, iter_jsonl_lines

LETTERS = "ABCDEFGHIJ"
GPQA_COLUMNS = ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
GPQA_SEED = 0  # GPQA's baselines' default (run_baseline.py, `seed: int = 0`)
MMLU_PRO_COLUMNS = ("question", "options", "answer", "answer_index")


def _rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for each row of a csv, JSON-lines (.gz too), JSON-list or parquet file;
    `where` names the file and the row for an error message."""
    name = path.name.lower()
    if name.endswith(".csv"):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(reader, 1):
                yield f"{path}: row {i} (line {reader.line_num})", row
    elif name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow comes with datasets
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), or give "
                            "the rows as JSON lines") from None
        for i, row in enumerate(pq.read_table(path).to_pylist(), 1):
            yield f"{path}: row {i}", row
    elif name.endswith(".json"):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a JSON file ({e})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        for i, row in enumerate(rows, 1):
            yield f"{path}: row {i}", row
    else:
        for lineno, row in iter_jsonl_lines(path):
            yield f"{path}:{lineno}", row


def _check_columns(path: Path, where: str, row, columns, benchmark: str) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a row of {benchmark}'s columns, got {type(row).__name__}")
    missing = [c for c in columns if c not in row]
    if missing:
        raise DataError(f"{path}: not {benchmark}'s format: no column {missing[0]!r} (needs "
                        f"{', '.join(columns)}; found {', '.join(map(str, list(row)[:12]))})")


def gpqa_items(path: Path, seed: int = GPQA_SEED) -> list[dict]:
    """GPQA's rows as {idx, question, reference, answer_type, choices}: the options shuffled by
    GPQA's seeded recipe, the question laid out as the CFT evaluation laid it out."""
    rng = random.Random(seed)  # the same draws as random.seed(seed) + random.shuffle
    items = []
    for i, (where, row) in enumerate(_rows(path)):
        _check_columns(path, where, row, GPQA_COLUMNS, "GPQA")
        empty = [c for c in GPQA_COLUMNS if not isinstance(row[c], str) or not row[c].strip()]
        if empty:
            raise DataError(f"{where}: column {empty[0]!r} is empty")
        choices = [row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"],
                   row["Correct Answer"]]
        rng.shuffle(choices)
        question = row["Question"]
        options = " ".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, choices))
        items.append({"idx": i, "question": question + ("" if question.endswith("\n") else "\n")
                      + "Answer Choices: " + options, "reference": LETTERS[choices.index(row["Correct Answer"])],
                      "answer_type": None, "choices": choices})
    return items


def mmlu_pro_items(path: Path) -> list[dict]:
    """MMLU-Pro's rows as {idx, question, reference, answer_type, choices, category}: the user
    turn of its official zero-shot CoT prompt, the answer letter."""
    items = []
    for i, (where, row) in enumerate(_rows(path)):
        _check_columns(path, where, row, MMLU_PRO_COLUMNS, "MMLU-Pro")
        options = row["options"]
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise DataError(f"{where}: column 'question' is empty")
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise DataError(f"{where}: column 'options' must be a list of strings, got {options!r:.80}")
        answer, index = row["answer"], row["answer_index"]
        if not (isinstance(answer, str) and len(answer) == 1 and answer in LETTERS):
            raise DataError(f"{where}: column 'answer' must be a letter A-J, got {answer!r}")
        if index != LETTERS.index(answer):
            raise DataError(f"{where}: 'answer' {answer!r} and 'answer_index' {index!r} disagree")
        kept = [o for o in options if o != "N/A"]
        if not 2 <= len(kept) <= len(LETTERS) or LETTERS.index(answer) >= len(kept):
            raise DataError(f"{where}: answer {answer!r} is not among its {len(kept)} options (N/A dropped)")
        turn = "Question:\n" + row["question"] + "\nOptions:\n"
        turn += "".join(f"{letter}. {option}\n" for letter, option in zip(LETTERS, kept))
        items.append({"idx": i, "question": turn + "Answer: Let's think step by step.\n", "reference": answer,
                      "answer_type": None, "choices": kept, "category": row.get("category")})
    return items


# The formats of the multiple-choice benchmarks (cft.benchmarks.BENCHMARKS' `choice`).
FORMATS = {"gpqa": gpqa_items, "mmlu_pro": mmlu_pro_items}
