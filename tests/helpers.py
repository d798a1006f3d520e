"""What many tests do: run the CLI as a user would, read a run directory's files through
`RunPaths` and `read_jsonl` (never by spelling out paths or parsing JSONL by hand), build teacher
requests for the fake OpenAI servers, and check that no file holds a secret."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from cft.benchmarks import SHIPPED as BENCHMARKS
from cft.critique.base import Request, request_key
from cft.io import read_jsonl
from cft.paths import RunPaths

ROOT = Path(__file__).resolve().parents[1]


def cli_env(outputs: Path, cache: Path, **extra: str) -> dict:
    """The environment of a CLI run: outputs and the tiny-model cache under the test's tmp dirs,
    the shipped benchmarks, W&B off unless a test turns it on."""
    return {**os.environ, "CFT_OUTPUTS": str(outputs), "CFT_CACHE": str(cache),
            "CFT_BENCHMARKS": str(BENCHMARKS), "WANDB_MODE": "disabled", **extra}


def cli(*args: str, outputs: Path | None = None, cache: Path | None = None, env: dict | None = None,
        module: str = "cft.main", timeout: float | None = 600,
        check: bool = False) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` from the repository root, output captured, in `env` or else
    cli_env(outputs, cache)."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          env=env or cli_env(outputs, cache), capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def torchrun_env(cache: Path, **extra: str) -> dict:
    """The environment of a multi-process CPU run: one thread per process, DeepSpeed's ops
    compiled once under the cache."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.environ.get(
        "TORCH_EXTENSIONS_DIR", str(Path(cache) / "torch_extensions")), **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_paths(outputs: Path, run_name: str) -> RunPaths:
    """The run directory a single (non-multirun) CLI run with this run_name writes."""
    return RunPaths.of(Path(outputs) / "runs" / run_name)


def train_metrics(paths: RunPaths) -> list[dict]:
    """The train stage's logged steps (metrics.jsonl rows that carry a loss)."""
    return [row for row in read_jsonl(paths.metrics) if row.get("stage") == "train" and "loss" in row]


def teacher_requests(cfg, n: int, start: int = 0, prompt_version: int = 1,
                     marker: dict[int, str] | None = None) -> list[Request]:
    """Critique requests for a TeacherConfig, keyed the way the critique stage keys them;
    `marker` appends a fake server's fault marker to item i's message."""
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
    out = []
    for i in range(start, start + n):
        question, response = f"What is {i} + {i}?", f"{i} + {i} = {2 * i + (i % 3 == 0)}"
        key = request_key(model=cfg.model, prompt_name="critique-v1", prompt_version=prompt_version,
                          sampling=sampling, question=question, response=response)
        user = f"Question: {question}\n\nSolution: {response}{(marker or {}).get(i, '')}"
        out.append(Request(key=key, meta={"id": f"q{i}"}, messages=[
            {"role": "system", "content": f"You are a science expert. (v{prompt_version})"},
            {"role": "user", "content": user}]))
    return out


def assert_no_secret(root: Path, *secrets: str) -> int:
    """No file under `root` holds any of `secrets`; returns how many files were read."""
    files = [p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in secrets), path
    return len(files)


def user_benchmarks(directory: Path) -> dict[str, Path]:
    """Copies of the benchmarks that do not ship (GPQA is gated, MMLU-Pro large), a few made-up
    rows in their official layouts (GPQA Diamond's csv columns, MMLU-Pro's rows as JSON lines), for
    tests that run a table evaluating them: {"gpqa": path, "mmlu_pro": path}."""
    import csv

    directory.mkdir(parents=True, exist_ok=True)
    gpqa, mmlu = directory / "gpqa_diamond.csv", directory / "mmlu_pro_test.jsonl"
    header = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    with open(gpqa, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerow(["Which particle mediates the electromagnetic force?", "Photon", "Gluon", "W boson", "Graviton"])
        writer.writerow(["What is the spin of an electron?", "1/2", "1", "0", "3/2"])
    rows = [{"question_id": 70, "question": "Find the characteristic of the ring 2Z.",
             "options": ["0", "30", "3", "10", "12", "50", "2", "100", "20", "5"], "answer": "A",
             "answer_index": 0, "cot_content": "", "category": "math", "src": "cot_lib-abstract_algebra"}]
    mmlu.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"gpqa": gpqa, "mmlu_pro": mmlu}


def bind_user_benchmarks(benchmarks, files: dict[str, Path]) -> str:
    """The `eval.benchmarks=[...]` override naming `files` for the entries that do not ship."""
    from cft.benchmarks import get_benchmark

    names = [get_benchmark(b).name for b in benchmarks]
    return "eval.benchmarks=[" + ",".join(f"{n}:{files[n]}" if n in files else n for n in names) + "]"
