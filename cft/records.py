"""The one record schema every dataset is normalized into."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

RIGHT, WRONG, UNKNOWN = "right", "wrong", "unknown"


@dataclass
class Record:
    id: str
    question: str
    reference_answer: Optional[str]
    reference_solution: Optional[str]
    noisy_response: Optional[str]
    # Where the noisy response came from, e.g. "champ:GPT-4|0-Shot", "webinstruct", "generated:tiny".
    noisy_source: str
    # Is the noisy response's final answer correct, by the answer checker? right | wrong | unknown.
    # "unknown" when the check cannot decide; we never guess.
    response_correct: str = UNKNOWN
    # A critique the dataset already ships (WebInstruct-CFT's GPT-4o `output`), if any.
    released_critique: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        return cls(**d)


def same_example(rec: Record) -> tuple:
    """What makes a record a duplicate of another: a repeated row, i.e. the same question, noisy
    response and shipped critique from the same source. The same response text under two sources
    is kept twice: CHAMP ships some responses verbatim under several prompting setups, and each is
    one of One-Shot CFT's 72 candidates; two shipped critiques of one response are two examples."""
    return rec.question, rec.noisy_response, rec.released_critique, rec.noisy_source


def drop_duplicates(records: list[Record]) -> tuple[list[Record], int]:
    """The first record of each `same_example`, in order, and how many were dropped."""
    kept: dict[tuple, Record] = {}
    for rec in records:
        kept.setdefault(same_example(rec), rec)
    return list(kept.values()), len(records) - len(kept)


def is_verified(rec: dict) -> bool:
    """Whether a record's noisy response counts as verified correct (method.keep=verified).

    The answer checker decides where it can. Where it cannot (WebInstruct-CFT has no reference
    answer), the verdict of the critique the dataset ships decides: the paper's SFT-verified
    keeps the responses its GPT-4o critiques judged correct.
    """
    if rec["response_correct"] != UNKNOWN:
        return rec["response_correct"] == RIGHT
    return (rec.get("extra") or {}).get("released_verdict") == RIGHT


def response_polarity(row: dict) -> str:
    """Whether the response a critique row (or record) critiques is right or wrong: the answer
    checker's decision where it made one, else the critique's own verdict (WebInstruct-CFT has
    no reference answers; its GPT-4o verdicts decide, as for SFT-verified); "unknown" else."""
    if row.get("response_correct", UNKNOWN) != UNKNOWN:
        return row["response_correct"]
    verdict = row.get("teacher_verdict") or (row.get("extra") or {}).get("released_verdict")
    return verdict if verdict in (RIGHT, WRONG) else UNKNOWN
