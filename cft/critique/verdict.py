"""Parse a critique's final verdict and decide whether a teacher output is usable."""
from __future__ import annotations

import re
from typing import Optional

_CONCLUSION = re.compile(r"Conclusion:\s*\**\s*(right|wrong)\b\s*\**\s*(\[END\])?", re.I)


def parse_verdict(critique: str) -> Optional[str]:
    """The verdict of the LAST `Conclusion: right/wrong` line, or None if there is none."""
    matches = _CONCLUSION.findall(critique or "")
    return matches[-1][0].lower() if matches else None


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
