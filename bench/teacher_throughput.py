"""Throughput of OpenAITeacher against a 200 ms-latency localhost server, vs one call at a time.

With per-call latency L and C calls in flight, no client can exceed C / L requests/s; the
benchmark reports the fraction of that bound reached (target >= 0.8) and the speed-up over a
one-at-a-time client measured in the same process.

    python bench/teacher_throughput.py [--n 400 --concurrency 32 --latency 0.2 --serial-n 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cft.config import TeacherConfig  # noqa: E402
from cft.critique.api import OpenAITeacher  # noqa: E402
from cft.critique.base import Request  # noqa: E402
from cft.store import Ledger, ResultStore  # noqa: E402
from openai_server import ServerProcess  # noqa: E402

KEY_ENV = "CFT_BENCH_KEY"


def run(base_url: str, n: int, concurrency: int, tag: str) -> float:
    """Requests per second for `n` fresh requests at `concurrency`."""
    cfg = TeacherConfig(name="bench", backend="openai", model="fake-critic", base_url=base_url,
                        api_key_env=KEY_ENV, max_tokens=512, concurrency=concurrency,
                        requests_per_minute=10**7, tokens_per_minute=10**10, timeout_s=30.0)
    # Question-sized prompts, distinct per run so nothing is cached.
    requests = [Request(key=f"{tag}-{i}", meta={"i": i}, messages=[
        {"role": "system", "content": "You are a science expert."},
        {"role": "user", "content": f"Question: {tag} {i}\n\nSolution: " + "step " * 150}])
        for i in range(n)]
    with tempfile.TemporaryDirectory() as d, ResultStore(Path(d) / "cache.jsonl") as store, \
            Ledger(Path(d) / "ledger.jsonl") as ledger:
        stats = OpenAITeacher(cfg, progress=False).generate(requests, store, ledger)
    assert stats["done"] == n, stats
    return n / stats["elapsed_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--serial-n", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault(KEY_ENV, "bench-not-a-secret")
    with ServerProcess(latency_s=args.latency) as srv:  # its own process: its own core
        run(srv.base_url, 8, 8, "warmup")
        serial = run(srv.base_url, args.serial_n, 1, "serial")
        conc = run(srv.base_url, args.n, args.concurrency, "concurrent")
    bound = args.concurrency / args.latency
    fraction = conc / bound
    print(f"one-at-a-time : {serial:8.2f} req/s  ({args.serial_n} requests, bound {1 / args.latency:.1f})")
    print(f"concurrency {args.concurrency:<3}: {conc:8.2f} req/s  ({args.n} requests)")
    print(f"bound C/L     : {bound:8.2f} req/s  (C={args.concurrency}, L={args.latency}s)")
    print(f"of bound      : {fraction:8.3f}  (target >= 0.8: {'PASS' if fraction >= 0.8 else 'FAIL'})")
    print(f"vs one-at-a-time: {conc / serial:6.1f}x")
    return 0 if fraction >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
