"""ResultStore / Ledger: what survives a crash, and what a resumed run sees."""
from __future__ import annotations

import json

import pytest

from cft.store import Ledger, ResultStore


def _result(i: int, text: str = "ok") -> dict:
    return {"key": f"k{i}", "text": text, "finish_reason": "stop", "meta": {"id": i}}


def test_first_result_wins_and_survives_reopen(tmp_path):
    path = tmp_path / "cache.jsonl"
    with ResultStore(path) as store:
        store.append(_result(1, "first"))
        store.append(_result(1, "second"))
        store.append(_result(2, "é ∑ unicode"))
        assert len(store) == 2 and "k1" in store and "k3" not in store
        assert store.get("k1")["text"] == "first" and store.get("k3") is None
    assert len(path.read_text().splitlines()) == 2
    with ResultStore(path) as store:
        assert store.repaired_bytes == 0
        assert store.get("k2") == _result(2, "é ∑ unicode")
        store.append(_result(3))
        assert store.get("k3")["text"] == "ok" and store.get("k1")["text"] == "first"


@pytest.mark.parametrize("tail", [b'{"key": "k9", "te', b'{"key": "k9", "te\n', b"\x00\x00\x00"])
def test_torn_tail_moves_to_side_file_and_store_loads(tmp_path, tail):
    path = tmp_path / "cache.jsonl"
    with ResultStore(path) as store:
        for i in range(3):
            store.append(_result(i))
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(tail)
    with ResultStore(path) as store:
        assert store.repaired_bytes == len(tail)
        assert len(store) == 3 and "k9" not in store
        store.append(_result(9))  # appends after the repair land on a line of their own
    assert path.read_bytes().startswith(good)
    assert tail.rstrip(b"\n") in (tmp_path / "cache.jsonl.torn").read_bytes()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k0", "k1", "k2", "k9"]


def test_torn_tail_longer_than_a_read_chunk(tmp_path):
    path = tmp_path / "cache.jsonl"
    with ResultStore(path) as store:
        store.append(_result(0, "x" * 200_000))
    with path.open("ab") as f:
        f.write(b'{"key": "k1", "text": "' + b"y" * 150_000)
    with ResultStore(path) as store:
        assert len(store) == 1 and store.get("k0")["text"] == "x" * 200_000
        assert store.repaired_bytes == 150_000 + len(b'{"key": "k1", "text": "')


def test_torn_file_with_no_complete_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"key": "k0"')
    with ResultStore(path) as store:
        assert len(store) == 0 and store.repaired_bytes == 12
    assert path.read_bytes() == b""


def test_ledger_totals_and_cost(tmp_path):
    with Ledger(tmp_path / "ledger.jsonl", price_prompt_per_mtok=2.5,
                price_completion_per_mtok=10.0) as ledger:
        ledger.record(key="k0", attempt=1, status="retry:http_429")
        ledger.record(key="k0", attempt=2, status="ok", prompt_tokens=1000,
                      completion_tokens=500, latency_s=1.5)
        totals = ledger.totals()
    cost = round((1000 * 2.5 + 500 * 10.0) / 1e6, 6)
    assert totals == {"attempts": 2, "prompt_tokens": 1000, "completion_tokens": 500,
                      "cost_usd": cost, "sync_cost_usd": cost}


def test_a_second_writer_is_refused_until_the_first_dies(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from cft.store import StoreBusy

    path = tmp_path / "cache.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom cft.store import ResultStore\n"
         f"s = ResultStore({str(path)!r})\ns.append({{'key': 'k1', 'text': 'a'}})\nprint('ready', flush=True)\n"
         "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreBusy, match=rf"{path}.*pid {holder.pid}"):
            ResultStore(path)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with ResultStore(path) as store:  # the kernel dropped the dead writer's lock
        assert store.get("k1")["text"] == "a"
