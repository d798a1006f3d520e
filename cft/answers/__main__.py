"""Grade a JSONL file of answer pairs: `python -m cft.answers PAIRS.jsonl --out OUT.jsonl`.

Each input line needs `prediction` (string or null) and `reference` (a string; JSON numbers are
read as their text); other fields (an `answer_type`, ids) are carried to the output unread. Each
output line is the input line plus `verdict` (and `verdict_math_verify` with --compare). A line
that is not UTF-8, not a JSON object, or has a field of another type stops the run before any
grading, with the file and line.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from cft.answers.grader import CHECKERS, Grader
from cft.io import DataError, iter_jsonl_lines, write_jsonl


def _grade(rows: list[dict], checker: str, args) -> tuple[list[str], float]:
    start = time.perf_counter()
    with Grader(timeout=args.timeout, workers=args.workers, checker=checker) as grader:
        verdicts = grader.grade(((r["prediction"], r["reference"]) for r in rows),
                                progress=True)
    seconds = time.perf_counter() - start
    counts = collections.Counter(v.value for v in verdicts)
    print(f"[{checker}] " + " ".join(f"{k}={counts[k]}" for k in ("equal", "different", "timeout", "unparsable"))
          + f"  {len(rows) / max(seconds, 1e-9):.1f} pairs/s ({seconds:.1f}s)")
    return [v.value for v in verdicts], seconds


def _read_pairs(path: Path) -> list[dict]:
    """The rows of `path`; DataError naming the file and line of the first bad one (a list as
    `prediction` would otherwise surface as a TypeError from inside the grader)."""
    rows = []
    for line, row in iter_jsonl_lines(path, required=("prediction", "reference")):
        for field, allowed, wanted in (("prediction", (str, int, float, type(None)), "a string or null"),
                                       ("reference", (str, int, float), "a string")):
            if not isinstance(row[field], allowed):
                kind = "null" if row[field] is None else type(row[field]).__name__
                raise DataError(f"{path}:{line}: `{field}` must be {wanted}, got {kind}")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cft.answers", description=__doc__.splitlines()[0])
    parser.add_argument("pairs", type=Path, help="JSONL with prediction, reference")
    parser.add_argument("--out", type=Path, required=True, help="JSONL: the input lines plus `verdict`")
    parser.add_argument("--checker", choices=CHECKERS, default="cft")
    parser.add_argument("--compare", action="store_true", help="also run the other checker; list disagreements")
    parser.add_argument("--timeout", type=float, default=5.0, help="hard per-pair limit in seconds")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        rows = _read_pairs(args.pairs)
    except (DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    verdicts, _ = _grade(rows, args.checker, args)
    other_name = next(c for c in CHECKERS if c != args.checker)
    others = _grade(rows, other_name, args)[0] if args.compare else None
    other_key = f"verdict_{other_name.replace('-', '_')}"
    write_jsonl(args.out, ({**row, "verdict": verdicts[i], **({other_key: others[i]} if others else {})}
                           for i, row in enumerate(rows)))
    if others is not None:
        disagree = [i for i in range(len(rows)) if verdicts[i] != others[i]]
        print(f"{len(disagree)} of {len(rows)} pairs disagree ({args.checker} vs {other_name}):")
        for i in disagree:
            print(f"  line {i + 1}: {args.checker}={verdicts[i]} {other_name}={others[i]}  "
                  f"pred={str(rows[i]['prediction'])[:60]!r} ref={str(rows[i]['reference'])[:60]!r}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
