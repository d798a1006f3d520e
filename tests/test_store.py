"""ResultStore / Ledger: what survives a crash, and what a resumed run sees; output manifests:
what damage to a finished stage's files they find."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cft.store import Ledger, ResultStore, StoreBusy, damage, manifest


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


@pytest.mark.parametrize("n_good, tail", [
    (3, b'{"key": "k9", "te'), (3, b'{"key": "k9", "te\n'), (3, b"\x00\x00\x00"),
    (1, b'{"key": "k9", "text": "' + b"y" * 150_000),  # longer than a read chunk
    (0, b'{"key": "k9"'),  # no complete line at all
], ids=["cut", "cut-newline", "zeros", "longer-than-a-chunk", "no-complete-line"])
def test_torn_tail_moves_to_side_file_and_store_loads(tmp_path, n_good, tail):
    path = tmp_path / "cache.jsonl"
    good_keys = [f"k{i}" for i in range(n_good)]
    with ResultStore(path) as store:
        for i in range(n_good):
            store.append(_result(i, "x" * 200_000))
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(tail)
    with ResultStore(path) as store:
        assert store.repaired_bytes == len(tail)
        assert len(store) == n_good and "k9" not in store
        assert all(store.get(k)["text"] == "x" * 200_000 for k in good_keys)
        store.append(_result(9))  # appends after the repair land on a line of their own
    assert path.read_bytes().startswith(good)
    assert tail.rstrip(b"\n") in (tmp_path / "cache.jsonl.torn").read_bytes()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [*good_keys, "k9"]


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


MIB = 1 << 20


@pytest.mark.parametrize("size,change,found", [
    (3 * MIB, lambda b: b[:-1], "has 3145727 bytes, not the 3145728"),  # truncated
    (3 * MIB, lambda b: b"x" + b[1:], "has changed since it was written"),  # in the first MiB
    (3 * MIB, lambda b: b[:-1] + b"x", "has changed since it was written"),  # in the last MiB
    (3 * MIB, lambda b: b[:MIB + 7] + b"x" + b[MIB + 8:], None),  # mid-file in a big file: not read
    (MIB, lambda b: b[:MIB // 2] + b"x" + b[MIB // 2 + 1:], "has changed since it was written"),
    (MIB, None, "output out/weights.bin is missing"),
], ids=["truncated", "first-mib", "last-mib", "middle-of-big-file", "middle-of-small-file", "deleted"])
def test_manifest_finds_what_changed(tmp_path, monkeypatch, size, change, found):
    """Files up to the limit (64 MiB; 2 MiB here) are hashed whole, bigger ones by size and their
    first and last MiB."""
    monkeypatch.setattr("cft.store._FULL_HASH_MAX", 2 * MIB)
    path = tmp_path / "out" / "weights.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(size))
    recorded = manifest(tmp_path, [path])
    assert damage(tmp_path, recorded) is None
    if change is None:
        path.unlink()
    else:
        path.write_bytes(change(path.read_bytes()))
    why = damage(tmp_path, recorded)
    assert why is None if found is None else found in why, why
