"""What many tests do: run the CLI as a user would, and read a run directory's files through
`RunPaths` and `read_jsonl` (never by spelling out paths or parsing JSONL by hand)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cft.io import read_jsonl
from cft.paths import RunPaths

ROOT = Path(__file__).resolve().parents[1]


def cli_env(outputs: Path, cache: Path, **extra: str) -> dict:
    """The environment of a CLI run: outputs and the tiny-model cache under the test's tmp dirs,
    W&B off unless a test turns it on."""
    return {**os.environ, "CFT_OUTPUTS": str(outputs), "CFT_CACHE": str(cache),
            "WANDB_MODE": "disabled", **extra}


def cli(*args: str, outputs: Path, cache: Path, env: dict | None = None, timeout: float = 600,
        check: bool = False) -> subprocess.CompletedProcess:
    """`python -m cft.main ARGS` from the repository root, output captured."""
    proc = subprocess.run([sys.executable, "-m", "cft.main", *args], cwd=ROOT,
                          env=env or cli_env(outputs, cache), capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def run_paths(outputs: Path, run_name: str) -> RunPaths:
    """The run directory a single (non-multirun) CLI run with this run_name writes."""
    return RunPaths.of(Path(outputs) / "runs" / run_name)


def train_metrics(paths: RunPaths) -> list[dict]:
    """The train stage's logged steps (metrics.jsonl rows that carry a loss)."""
    return [row for row in read_jsonl(paths.metrics) if row.get("stage") == "train" and "loss" in row]
