"""BatchTeacher (teacher.mode=batch) against a localhost server speaking the Batch API with faults.

The acceptance run: 1,000 items across several batches, one batch expiring half done, items in
error files, 5xx on retrieve, a create whose answer is lost, and our process SIGKILLed between a
batch's create and its record;
every item ends stored exactly once or rejected with a reason, no item is submitted again once
answered, and the ledger's tokens equal what the server billed.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from batch_server import ALWAYS_ERROR, BatchServerProcess
from cft.config import TeacherConfig
from cft.critique.base import request_key
from cft.critique.batch import BatchesPending, BatchTeacher
from cft.critique.batch_files import parse_result_line, request_line, split_batches
from cft.io import read_jsonl
from cft.store import Ledger, ResultStore
from helpers import assert_no_secret, teacher_requests

KEY_ENV = "CFT_TEST_BATCH_KEY"
FAKE_KEY = "sk-test-batch-0123456789DONOTLEAK"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def batch_cfg(base_url: str, **over) -> TeacherConfig:
    """Fast polling; OpenAI's prices, so the ledger has dollars to halve."""
    cfg = TeacherConfig(name="batch-test", backend="openai", model="fake-critic", base_url=base_url,
                        api_key_env=KEY_ENV, max_tokens=256, max_attempts=4, timeout_s=10.0,
                        backoff_base_s=0.01, backoff_max_s=0.05, mode="batch", batch_max_requests=300,
                        batch_poll_s=0.01, batch_poll_max_s=0.05, batch_wait_s=120.0,
                        price_prompt_per_mtok=2.5, price_completion_per_mtok=10.0)
    return replace(cfg, **over)


def run_batch(cfg, requests, run_dir: Path, wait: bool = True) -> dict:
    with ResultStore(run_dir / "cache.jsonl") as store, Ledger(
            run_dir / "ledger.jsonl", cfg.price_prompt_per_mtok, cfg.price_completion_per_mtok,
            discount=cfg.batch_discount, teacher=cfg.name) as ledger:
        return BatchTeacher(cfg, run_dir / "batches.jsonl", progress=False).generate(
            requests, store, ledger, wait=wait)


# The killed run is a separate process (the server SIGKILLs it mid-create).
CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from test_batch import ALWAYS_ERROR, batch_cfg, run_batch, teacher_requests
    cfg = batch_cfg(sys.argv[2])
    marker = {int(i): ALWAYS_ERROR for i in sys.argv[5].split(",")}
    run_batch(cfg, teacher_requests(cfg, int(sys.argv[4]), marker=marker), Path(sys.argv[3]))
""")


@pytest.mark.slow
def test_thousand_items_faults_and_a_kill_exactly_once_and_ledger_matches_server(tmp_path):
    n, always_error = 1000, {7, 500, 999}
    with BatchServerProcess(seed=3, expire_batch=2, expire_done_fraction=0.5, rate_item_error=0.05,
                            retrieve_500_every=5, lose_create=5, api_key=FAKE_KEY) as server:
        cfg = batch_cfg(server.base_url)
        requests = teacher_requests(cfg, n, marker=dict.fromkeys(always_error, ALWAYS_ERROR))
        # Run 1: killed by the server while its 3rd batch is being created.
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(TESTS), server.base_url,
                                  str(tmp_path), str(n), ",".join(map(str, always_error))],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server.kill_on_create(child.pid, nth=3)
        _, err = child.communicate(timeout=120)
        assert child.returncode == -9, err[-2000:]
        after_kill = server.stats()
        assert after_kill["faults"]["kill_on_create"] == 1 and len(after_kill["batches"]) == 3
        log = read_jsonl(tmp_path / "batches.jsonl")
        assert Counter(r["event"] for r in log) == {"uploaded": 3, "created": 2}

        # Run 2: adopts the orphaned batch, submits the rest, resubmits failures, collects all.
        stats = run_batch(cfg, requests, tmp_path)
        final = server.stats()

    # Every item stored exactly once, or rejected with its reason after max_attempts batches.
    stored = read_jsonl(tmp_path / "cache.jsonl")
    keys = [r["key"] for r in stored]
    assert len(keys) == len(set(keys)) == n - len(always_error)
    failed = {f["key"]: f for f in stats["failures"]}
    doomed = {requests[i].key for i in always_error}
    assert set(failed) == doomed and set(keys) | doomed == {r.key for r in requests}
    assert all(f["attempts"] == cfg.max_attempts and f["reason"].startswith("http_500") for f in failed.values())

    # The server's own view: no item submitted again after an answer, none twice at once.
    subs, oks, fails = final["submissions"], final["successes"], final["failures"]
    assert all(subs[k] == oks.get(k, 0) + fails.get(k, 0) for k in subs)
    assert all(v == 1 for v in oks.values()) and set(oks) == set(keys)
    assert all(subs[k] == cfg.max_attempts for k in doomed)

    # The faults really happened: >= 3 batches, one expired part-done, error-file items, 5xx.
    statuses = Counter(b["status"] for b in final["batches"].values())
    assert len(final["batches"]) >= 4 and statuses["expired"] == 1
    assert final["faults"]["item_500"] > 0 and final["faults"]["retrieve_500"] > 0
    assert stats["poll_errors"] > 0 and stats["batches_adopted"] == 1
    assert final["faults"]["create_lost"] == 1 and stats["batches_recovered"] == 1
    assert any(r.get("adopted") for r in read_jsonl(tmp_path / "batches.jsonl"))
    expired_reasons = [r for r in read_jsonl(tmp_path / "batches.jsonl")
                       if r["event"] == "done" and r["status"] == "expired"]
    kinds = Counter(v.split(":")[0] for v in expired_reasons[0]["failed"].values())
    assert kinds["batch_expired"] == 150 and set(kinds) <= {"batch_expired", "http_500"}

    # Ledger == the server's count; batch price = half the synchronous price.
    ledger = read_jsonl(tmp_path / "ledger.jsonl")
    assert sum(r["prompt_tokens"] for r in ledger) == final["prompt_tokens"]
    assert sum(r["completion_tokens"] for r in ledger) == final["completion_tokens"]
    assert sum(r["status"] == "ok" for r in ledger) == len(keys)
    assert len(ledger) == sum(subs.values())  # one row per item per batch it was in
    with Ledger(tmp_path / "ledger.jsonl") as l:
        totals = l.totals()
    assert totals["cost_usd"] > 0 and totals["sync_cost_usd"] == pytest.approx(2 * totals["cost_usd"], rel=1e-6)

    assert_no_secret(tmp_path, FAKE_KEY)


def test_submit_and_exit_then_collect_later_with_a_cancelled_batch(tmp_path):
    """batch_wait_s=0 submits and stops; a batch cancelled meanwhile is resubmitted on collect."""
    import openai

    with BatchServerProcess(api_key=FAKE_KEY) as server:
        cfg = batch_cfg(server.base_url, batch_max_requests=40)
        requests = teacher_requests(cfg, 100)
        with pytest.raises(BatchesPending, match="Run the same command again"):
            run_batch(replace(cfg, batch_wait_s=0.0), requests, tmp_path)
        first = [r["batch_id"] for r in read_jsonl(tmp_path / "batches.jsonl") if r["event"] == "created"]
        assert len(first) == 3
        client = openai.OpenAI(base_url=server.base_url, api_key=FAKE_KEY)
        client.batches.cancel(first[0])
        stats = run_batch(cfg, requests, tmp_path)
        final = server.stats()
        again = run_batch(cfg, requests, tmp_path)  # all stored: nothing submitted, nothing polled
        assert server.stats()["submissions"] == final["submissions"]

    assert stats["done"] == 100 and not stats["failures"] and again["batches_created"] == 0
    assert final["batches"][first[0]]["status"] == "cancelled"
    done = [r for r in read_jsonl(tmp_path / "batches.jsonl") if r["event"] == "done"]
    cancelled = next(r for r in done if r["batch_id"] == first[0])
    assert len(cancelled["failed"]) == 40 and all("batch cancelled" in v for v in cancelled["failed"].values())
    assert sorted(final["submissions"].values()) == [1] * 60 + [2] * 40


def test_split_respects_request_and_byte_limits():
    lines_ = [b"x" * n for n in (10, 10, 30, 5, 5, 5, 40)]
    groups = split_batches(lines_, max_requests=3, max_bytes=45)
    assert [i for g in groups for i in g] == list(range(7))
    for g in groups:
        assert len(g) <= 3 and sum(len(lines_[i]) for i in g) <= 45
    with pytest.raises(Exception, match="batch_max_bytes"):
        split_batches([b"x" * 50], 3, 45)


def test_request_line_is_the_sync_request_keyed_by_store_key():
    cfg = batch_cfg("http://127.0.0.1:9/v1")
    req = teacher_requests(cfg, 1)[0]
    line = json.loads(request_line(cfg, req))
    assert line["custom_id"] == req.key and line["url"] == "/v1/chat/completions"
    assert line["body"] == {"model": "fake-critic", "messages": req.messages, "temperature": 0.3,
                            "top_p": 0.95, "max_tokens": 256}
    assert parse_result_line({"custom_id": "k", "response": None,
                              "error": {"code": "batch_expired", "message": "late"}}) == (
        "k", None, "batch_expired: late")


def test_multi_teacher_keys_are_distinct_and_single_teacher_keys_unchanged(compose):
    from cft.critique.stage import build_requests, teachers_of

    records = [{"id": "r1", "question": "1+1?", "noisy_response": "2"}]
    single = compose([])
    before = request_key(model="reference", prompt_name="critique-v1", prompt_version=1,
                         sampling={"temperature": 0.3, "top_p": 0.95, "max_tokens": 3200},
                         question="1+1?", response="2")
    assert build_requests(single, records)[0].key == before
    multi = compose(["teacher.models=[{name: a},{name: b, temperature: 0.7}]"])
    teachers = teachers_of(multi.teacher)
    assert [(t.name, t.temperature, t.backend) for t in teachers] == [("a", 0.3, "reference"),
                                                                      ("b", 0.7, "reference")]
    keys = {build_requests(multi, records, t, multi=True)[0].key for t in teachers}
    assert len(keys) == 2 and before not in keys
