"""The math-verify checker, run under the Grader's process timeout instead of its own alarms.

math-verify's `parsing_timeout` / `timeout_seconds` use `signal.alarm`, which fails off the main
thread and cannot interrupt C-level work; we turn them off and let the Grader kill the process.
"""
from __future__ import annotations

import logging

from cft.answers.verdict import Verdict


def check_math_verify(prediction: str | None, reference: str) -> Verdict:
    """Verdict from math_verify.parse/verify on `\\boxed{}`-wrapped answers."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    if prediction is None:
        return Verdict.UNPARSABLE
    gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=None)
    pred = parse(f"\\boxed{{{prediction}}}", parsing_timeout=None)
    if not gold or not pred:
        return Verdict.UNPARSABLE
    return Verdict.EQUAL if verify(gold, pred, timeout_seconds=None) else Verdict.DIFFERENT
