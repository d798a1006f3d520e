"""A critique's final verdict, parsed one way for every reader (released critiques, teachers,
the trained critic)."""
from __future__ import annotations

import re
from typing import Optional

_CONCLUSION = re.compile(r"Conclusion:\s*\**\s*(right|wrong)\b\s*\**\s*(\[END\])?", re.I)


def parse_verdict(critique: str) -> Optional[str]:
    """The verdict of the LAST `Conclusion: right/wrong` line ("right" | "wrong"), or None."""
    matches = _CONCLUSION.findall(critique or "")
    return matches[-1][0].lower() if matches else None
