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


def is_verified(rec: dict) -> bool:
    """Whether a record's noisy response counts as verified correct (method.keep=verified).

    The answer checker decides where it can. Where it cannot (WebInstruct-CFT has no reference
    answer), the verdict of the critique the dataset ships decides: the paper's SFT-verified
    keeps the responses its GPT-4o critiques judged correct.
    """
    if rec["response_correct"] != UNKNOWN:
        return rec["response_correct"] == RIGHT
    return (rec.get("extra") or {}).get("released_verdict") == RIGHT
