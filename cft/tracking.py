"""Metrics logging: metrics.jsonl always (rank 0), W&B on top when tracking.mode allows."""
from __future__ import annotations

import json
import time
from pathlib import Path


def log_metrics(metrics_path: str | Path, row: dict, step: int | None = None) -> None:
    """Append one metrics row to metrics.jsonl (caller ensures rank 0)."""
    row = {"time": time.time(), **({"step": step} if step is not None else {}), **row}
    with open(metrics_path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
