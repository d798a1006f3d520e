"""The Batch API's files, and our log of them: a batch input line per request, batches cut to
the per-batch limits, an output/error file line read back, and `critique/batches.jsonl`, the
fsynced record of what was uploaded, created and collected that makes resume exactly-once."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from cft.critique.api import TeacherError, request_body
from cft.critique.base import Request
from cft.store import _take_lock

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"


class BatchLog:
    """`critique/batches.jsonl`: what was uploaded, created and collected, fsynced per line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = _take_lock(self.path)
        self.rows: list[dict] = []
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError:  # a torn last line: its event never completed
                    log.warning("batch log %s: ignoring a torn line", self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def append(self, **row: Any) -> None:
        row["at"] = round(time.time(), 3)
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.rows.append(row)

    def events(self, event: str, teacher: str) -> list[dict]:
        return [r for r in self.rows if r["event"] == event and r.get("teacher") == teacher]

    def close(self) -> None:
        self._f.close()
        self._lockfile.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request_line(cfg: Any, req: Request) -> bytes:
    """One JSONL line of a batch input file: the synchronous request's body, keyed by store key."""
    body = request_body(cfg, req.messages)
    line = {"custom_id": req.key, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def split_batches(lines: Sequence[bytes], max_requests: int, max_bytes: int) -> list[list[int]]:
    """Indices of `lines` grouped into consecutive batches within both per-batch limits."""
    groups: list[list[int]] = []
    size = 0
    for i, line in enumerate(lines):
        if len(line) > max_bytes:
            raise TeacherError(f"one batch request is {len(line)} bytes, over "
                               f"teacher.batch_max_bytes={max_bytes}")
        if not groups or len(groups[-1]) >= max_requests or size + len(line) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += len(line)
    return groups


def parse_result_line(row: dict) -> tuple[str, dict | None, str]:
    """(custom_id, chat completion body or None, failure reason) of an output/error file line."""
    key = row.get("custom_id") or ""
    resp = row.get("response") or {}
    err = row.get("error")
    code = int(resp.get("status_code") or 0)
    body = resp.get("body") or {}
    if err is None and code == 200 and body.get("choices"):
        return key, body, ""
    if err:
        return key, None, f"{err.get('code') or 'error'}: {str(err.get('message') or '')[:200]}"
    detail = (body.get("error") or {}).get("message") or ""
    return key, None, f"http_{code}: {str(detail)[:200]}" if code else "no response"
