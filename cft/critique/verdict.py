"""Parse a critique's final verdict and decide whether a teacher output is usable."""
from __future__ import annotations

from typing import Optional

from cft.verdict import parse_verdict


def reject_reason(result: dict, needs_verdict: bool) -> Optional[str]:
    """Why a teacher result cannot be used as a training target (None if it can)."""
    text = (result.get("text") or "").strip()
    if not text:
        return "empty"
    if result.get("finish_reason") == "length":
        return "finish_reason=length"
    if needs_verdict and parse_verdict(text) is None:
        return "no verdict line"
    return None
