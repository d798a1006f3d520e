"""What every teacher backend receives and returns."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    from cft.store import Ledger, ResultStore


@dataclass(frozen=True)
class Request:
    """One generation: `key` identifies it across runs (see `request_key`)."""

    key: str
    messages: list[dict[str, str]]
    meta: dict[str, Any] = field(default_factory=dict)


def request_key(*, model: str, prompt_name: str, prompt_version: int, sampling: dict,
                question: str, response: str | None, teacher: str | None = None) -> str:
    """Hash of everything that determines a teacher's output distribution.

    Changing the teacher model, the prompt (name or version) or the sampling parameters makes
    the affected items miss the cache; nothing else does. `teacher` (a multi-teacher run's
    teacher name) keeps teachers that share a model apart; None leaves single-teacher keys as
    they always were.
    """
    blob = {"model": model, "prompt": [prompt_name, prompt_version], "sampling": sampling,
            "question": question, "response": response}
    if teacher is not None:
        blob["teacher"] = teacher
    blob = json.dumps(blob, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Teacher(Protocol):
    """A backend that fills `store` with one result per request key it does not yet hold.

    A result is a dict with at least: key, text, finish_reason ("stop" | "length" | ...),
    model, prompt_tokens, completion_tokens. Backends must never re-request a key already in
    the store (exactly-once across resumes).
    """

    def generate(self, requests: Sequence[Request], store: "ResultStore", ledger: "Ledger") -> None: ...

