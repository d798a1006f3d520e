"""Append-only JSONL result store and cost ledger: durable, resumable, exactly-once.

Each teacher result is appended and flushed as it arrives. A crash can tear only the last
line; on open the torn tail is moved to a `.torn` side file (kept for inspection, never
silently buried) and the file is truncated to its last complete line.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Iterator


def _repair_tail(path: Path) -> int:
    """Truncate a torn last line (no trailing newline or not JSON); return bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data:
        return 0
    cut = len(data)
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
    else:
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            json.loads(data[last_start:])
        except json.JSONDecodeError:
            cut = last_start
    if cut == len(data):
        return 0
    with open(path.with_suffix(path.suffix + ".torn"), "ab") as side:
        side.write(data[cut:] + b"\n")
    with open(path, "r+b") as f:
        f.truncate(cut)
    return len(data) - cut


class _AppendLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = _repair_tail(self.path)
        self._lock = threading.Lock()
        self._f = open(self.path, "a", encoding="utf-8")

    def _append(self, row: dict) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rows(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


class ResultStore(_AppendLog):
    """Teacher outputs keyed by request key; the first result stored for a key wins."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._by_key: dict[str, dict] = {}
        for row in self.rows():
            self._by_key.setdefault(row["key"], row)

    def __contains__(self, key: str) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> dict | None:
        return self._by_key.get(key)

    def append(self, result: dict) -> None:
        if result["key"] in self._by_key:
            return
        self._append(result)
        self._by_key[result["key"]] = result


class Ledger(_AppendLog):
    """One row per API attempt (not per item): tokens, status and dollars."""

    def __init__(self, path: str | Path, price_prompt_per_mtok: float = 0.0,
                 price_completion_per_mtok: float = 0.0):
        super().__init__(path)
        self.price_prompt = price_prompt_per_mtok
        self.price_completion = price_completion_per_mtok

    def record(self, *, key: str, attempt: int, status: str, prompt_tokens: int = 0,
               completion_tokens: int = 0, latency_s: float = 0.0) -> None:
        cost = (prompt_tokens * self.price_prompt + completion_tokens * self.price_completion) / 1e6
        self._append({"key": key, "attempt": attempt, "status": status,
                      "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "cost_usd": round(cost, 8), "latency_s": round(latency_s, 4)})

    def totals(self) -> dict:
        t = {"attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        for row in self.rows():
            t["attempts"] += 1
            t["prompt_tokens"] += row["prompt_tokens"]
            t["completion_tokens"] += row["completion_tokens"]
            t["cost_usd"] += row["cost_usd"]
        t["cost_usd"] = round(t["cost_usd"], 6)
        return t
