"""OpenAITeacher against a real localhost HTTP server with injected faults (tests/openai_server.py).

The acceptance criteria of the API teacher: exactly-once results under faults and SIGKILLs,
ledger tokens equal to what the server billed, cache keys that move with the model / prompt /
sampling, and an API key that never reaches a file or a log.
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from cft.config import TeacherConfig
from cft.critique.api import OpenAITeacher, TeacherError, backoff_delay, estimate_tokens, parse_retry_after
from cft.critique.base import Request
from cft.io import read_jsonl
from cft.store import Ledger, ResultStore
from helpers import ROOT, teacher_requests
from openai_server import ALWAYS_500, BAD_REQUEST, ServerProcess, body_hash

KEY_ENV = "CFT_TEST_TEACHER_KEY"
FAKE_KEY = "sk-test-0123456789abcdefDONOTLEAK"


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def teacher_cfg(base_url: str, **over) -> TeacherConfig:
    """A fast test profile: sub-second timeouts and backoff, quotas that do not bind."""
    cfg = TeacherConfig(name="test", backend="openai", model="fake-critic", base_url=base_url,
                        api_key_env=KEY_ENV, temperature=0.3, top_p=0.95, max_tokens=256,
                        concurrency=32, requests_per_minute=10**7, tokens_per_minute=10**10,
                        max_attempts=10, timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.2)
    return replace(cfg, **over)


def server_hash(cfg: TeacherConfig, req: Request) -> str:
    return body_hash(cfg.model, req.messages, cfg.temperature, cfg.top_p, cfg.max_tokens)


def run_teacher(cfg, requests, tmp_path: Path) -> dict:
    with ResultStore(tmp_path / "cache.jsonl") as store, Ledger(tmp_path / "ledger.jsonl") as ledger:
        return OpenAITeacher(cfg, progress=False).generate(requests, store, ledger)


# --- (a) faults: exactly once, every attempt billed and recorded ---------------------------

def test_faulty_server_every_key_exactly_once_and_ledger_matches_server(tmp_path):
    with ServerProcess(seed=1, rate_429=0.1, rate_500=0.1, rate_timeout=0.1, timeout_sleep_s=2.0,
                       retry_after_s=0.05, rate_length=0.05, rate_no_verdict=0.05) as srv:
        # Client timeout 1 s: a "timeout" call hangs 2 s; a normal one answers in milliseconds.
        cfg = teacher_cfg(srv.base_url, concurrency=64, timeout_s=1.0)
        requests = teacher_requests(cfg, 1000)
        stats = run_teacher(cfg, requests, tmp_path)
        server = srv.stats()

    rows = read_jsonl(tmp_path / "cache.jsonl")
    per_key = Counter(r["key"] for r in rows)
    assert set(per_key) == {r.key for r in requests} and set(per_key.values()) == {1}
    assert stats["done"] == 1000 and stats["failed_permanently"] == 0
    # Every completed key was answered successfully exactly once by the server.
    assert all(server["successes"][server_hash(cfg, r)] == 1 for r in requests)
    assert server["total_successes"] == 1000

    ledger = read_jsonl(tmp_path / "ledger.jsonl")
    totals = Ledger(tmp_path / "ledger.jsonl").totals()
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == \
        (server["prompt_tokens"], server["completion_tokens"]) != (0, 0)
    # Every HTTP attempt is a ledger row (max_retries=0: one attempt, one server call). On a
    # loaded machine a client timeout can fire before the server has even read the request,
    # so timeouts are bounded below by the server's count rather than equal to it.
    statuses = Counter(r["status"] for r in ledger)
    assert totals["attempts"] == stats["attempts"] == len(ledger)
    assert statuses["ok"] == server["total_successes"] == 1000
    assert statuses["retry:http_429"] == server["faults"]["429"] > 0
    assert statuses["retry:http_500"] == server["faults"]["500"] > 0
    # A server-side timeout reaches the client as its own timeout or, when a loaded box fires the
    # client's timer late, as the 504 the server sends after its sleep.
    assert statuses["retry:timeout"] + statuses["retry:http_504"] >= server["faults"]["timeout"] > 0
    # The attempts the server never saw are client-side failures: a timeout that fired before the
    # server read the request, or a connection error (retry:<other reason>); never more than those.
    connection = sum(n for status, n in statuses.items() if status.startswith("retry:")
                     and status not in ("retry:http_429", "retry:http_500", "retry:timeout"))
    unseen = totals["attempts"] - server["total_calls"]
    assert 0 <= unseen <= statuses["retry:timeout"] - server["faults"]["timeout"] + connection

    # Truncated and verdict-less completions are stored (the stage rejects them), not retried.
    length = [r for r in rows if r["finish_reason"] == "length"]
    no_verdict = [r for r in rows if r["finish_reason"] == "stop" and "Conclusion:" not in r["text"]]
    assert 20 <= len(length) <= 80 and 20 <= len(no_verdict) <= 80
    assert all(r["completion_tokens"] == cfg.max_tokens for r in length)
    by_key = {r.key: r for r in requests}
    assert all(r["meta"] == by_key[r["key"]].meta and r["model"] == cfg.model for r in rows)
    print(f"\n[a] requests=1000 attempts={stats['attempts']} retries={stats['retries']} "
          f"faults={server['faults']} finish_length={len(length)} no_verdict={len(no_verdict)} "
          f"elapsed={stats['elapsed_s']}s")


def test_attempt_cap_and_non_retryable_errors_fail_permanently_and_resume(tmp_path):
    with ServerProcess(seed=2) as srv:
        cfg = teacher_cfg(srv.base_url, max_attempts=3)
        requests = teacher_requests(cfg, 20, marker={3: ALWAYS_500, 7: ALWAYS_500, 11: BAD_REQUEST})
        stats = run_teacher(cfg, requests, tmp_path)
        failed = {requests[i].key for i in (3, 7, 11)}
        assert stats["done"] == 17 and stats["failed_permanently"] == 3
        assert {f["key"] for f in stats["failures"]} == failed
        with ResultStore(tmp_path / "cache.jsonl") as store:
            assert len(store) == 17 and not any(k in store for k in failed)
        rows = read_jsonl(tmp_path / "ledger.jsonl")
        for i, expect in ((3, ["retry:http_500", "retry:http_500", "failed"]),
                          (7, ["retry:http_500", "retry:http_500", "failed"]),
                          (11, ["failed"])):  # a 400 is not retried
            assert [r["status"] for r in rows if r["key"] == requests[i].key] == expect

        # A re-run asks again for the three failures only.
        before = srv.stats()["total_calls"]
        stats = run_teacher(cfg, requests, tmp_path)
        assert stats["skipped_cached"] == 17 and stats["failed_permanently"] == 3
        assert srv.stats()["total_calls"] - before == 3 + 3 + 1


# --- (b) SIGKILL and resume -------------------------------------------------------------------

CHILD = """
import json, sys
from cft.config import TeacherConfig
from cft.critique.api import OpenAITeacher
from cft.critique.base import Request
from cft.store import Ledger, ResultStore
cfg = TeacherConfig(**json.loads(sys.argv[1]))
requests = [Request(**json.loads(line)) for line in open(sys.argv[2])]
with ResultStore(sys.argv[3] + "/cache.jsonl") as store, Ledger(sys.argv[3] + "/ledger.jsonl") as ledger:
    print(json.dumps(OpenAITeacher(cfg, progress=False).generate(requests, store, ledger)))
"""


def _complete_keys(path: Path) -> set[str]:
    keys = set()
    if path.exists():
        for line in path.read_bytes().split(b"\n"):
            try:
                keys.add(json.loads(line)["key"])
            except ValueError:
                pass  # a torn tail
    return keys


def test_sigkill_resume_never_re_requests_stored_keys(tmp_path):
    n, kills = 300, 3
    rng = random.Random(0)
    targets = sorted(rng.sample(range(20, n - 40), kills))
    with ServerProcess(seed=3, latency_s=0.03, rate_500=0.1) as srv:
        cfg = teacher_cfg(srv.base_url, concurrency=8, timeout_s=5.0)
        requests = teacher_requests(cfg, n)
        req_file = tmp_path / "requests.jsonl"
        req_file.write_text("".join(json.dumps(asdict(r)) + "\n" for r in requests))
        hashes = {r.key: server_hash(cfg, r) for r in requests}
        cache = tmp_path / "cache.jsonl"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        argv = [sys.executable, "-c", CHILD, json.dumps(asdict(cfg)), str(req_file), str(tmp_path)]

        torn = b'{"key": "hand-written-torn-li'
        snapshots = []  # (keys stored before a restart, server calls per hash at that moment)
        for i, target in enumerate(targets + [None]):
            if i == 2:
                with cache.open("ab") as f:
                    f.write(torn)  # as if the kill had torn the last line
            snapshots.append((_complete_keys(cache), srv.stats()["calls"]))
            child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
            if target is None:
                out, _ = child.communicate(timeout=120)
                assert child.returncode == 0
                final_stats = json.loads(out.splitlines()[-1])
                break
            while len(_complete_keys(cache)) < target and child.poll() is None:
                time.sleep(0.005)
            assert child.poll() is None, "the child finished before it could be killed"
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            time.sleep(0.2)  # let the server drain what the dead client had sent
        after = srv.stats()

    # No key already in the store before a restart was requested again after it.
    for stored, calls in snapshots[1:]:
        assert stored, "nothing was stored before a kill"
        assert all(after["calls"][hashes[k]] == calls[hashes[k]] for k in stored)
    with ResultStore(cache) as store:
        assert len(store) == n and store.repaired_bytes == 0
    rows = read_jsonl(cache)
    assert Counter(r["key"] for r in rows) == Counter({r.key: 1 for r in requests})
    # The hand-written torn line went to the side file, not into the store.
    assert torn in (tmp_path / "cache.jsonl.torn").read_bytes()
    # Successes > 1 only for calls in flight at a kill (at most `concurrency` per kill).
    repeated = [k for k in hashes if after["successes"][hashes[k]] > 1]
    assert len(repeated) <= kills * cfg.concurrency
    assert final_stats["skipped_cached"] == len(snapshots[-1][0])
    print(f"\n[b] kills={kills} at stored={targets} resumes={kills} "
          f"repeated_in_flight={len(repeated)} final_run_cached={final_stats['skipped_cached']} "
          f"final_run_done={final_stats['done']}")


# --- (c) cache keys ---------------------------------------------------------------------------

def test_rerun_calls_only_for_changed_items(tmp_path):
    """A duplicate request is sent once; the cache key (request_key, as the stage builds it) is
    stable and moves with the model, the prompt version and the sampling."""
    with ServerProcess(seed=4) as srv:
        calls = lambda: srv.stats()["total_calls"]  # noqa: E731
        cfg = teacher_cfg(srv.base_url)
        first = teacher_requests(cfg, 20)
        stats = run_teacher(cfg, first + first[:2], tmp_path)
        assert (stats["done"], stats["skipped_duplicate"], calls()) == (20, 2, 20)
        # Same config: nothing is sent.
        assert run_teacher(cfg, first, tmp_path)["skipped_cached"] == 20 and calls() == 20
        # Five new items: five calls.
        stats = run_teacher(cfg, teacher_requests(cfg, 25), tmp_path)
        assert (stats["skipped_cached"], stats["done"], calls()) == (20, 5, 25)
        # New temperature, prompt version or model: every key changes, everything is redone.
        for changed, version in ((replace(cfg, temperature=0.7), 1), (cfg, 2),
                                 (replace(cfg, model="fake-critic-2"), 1)):
            before = calls()
            stats = run_teacher(changed, teacher_requests(changed, 25, prompt_version=version), tmp_path)
            assert (stats["skipped_cached"], stats["done"], calls() - before) == (0, 25, 25)
        # The original results are still there and still hit.
        assert run_teacher(cfg, first, tmp_path)["skipped_cached"] == 20
        with ResultStore(tmp_path / "cache.jsonl") as store:
            assert len(store) == 25 * 4


def test_a_reasoning_model_is_asked_without_the_sampling_fields_it_rejects(tmp_path):
    """o1 / o3-mini reject temperature, top_p and max_tokens with a 400 (the server answers as the
    API does): asked as a chat model, every request failed (One-Shot CFT's o3-mini and o1
    teachers); asked with max_completion_tokens alone, all succeed, synchronously and in a Batch
    API input file alike. teacher.reasoning=false forces the chat form."""
    from cft.critique.batch_files import request_line

    with ServerProcess(seed=5) as srv:
        o3 = teacher_cfg(srv.base_url, model="o3-mini-2025-01-31", max_attempts=1)
        assert run_teacher(o3, teacher_requests(o3, 4), tmp_path)["done"] == 4
        assert srv.stats()["faults"].get("400", 0) == 0
        forced = teacher_cfg(srv.base_url, model="o3-mini-2025-01-31", max_attempts=1, reasoning=False)
        stats = run_teacher(forced, teacher_requests(forced, 2), tmp_path / "chat")
        assert stats["done"] == 0 and srv.stats()["faults"]["400"] == 2
    body = json.loads(request_line(o3, teacher_requests(o3, 1)[0]))["body"]
    assert body["max_completion_tokens"] == 256 and not {"temperature", "top_p", "max_tokens"} & set(body)
    chat = json.loads(request_line(teacher_cfg("http://x"), teacher_requests(o3, 1)[0]))["body"]
    assert (chat["temperature"], chat["top_p"], chat["max_tokens"]) == (0.3, 0.95, 256)


# --- (d) the API key --------------------------------------------------------------------------

def test_missing_key_names_the_variable_and_sends_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with ServerProcess() as srv:
        cfg = teacher_cfg(srv.base_url)
        with pytest.raises(TeacherError, match=KEY_ENV):
            run_teacher(cfg, teacher_requests(cfg, 3), tmp_path)
        assert srv.stats()["total_calls"] == 0
        # Nothing to do needs no key: a fully cached run works offline.
        monkeypatch.setenv(KEY_ENV, FAKE_KEY)
        run_teacher(cfg, teacher_requests(cfg, 3), tmp_path)
        monkeypatch.delenv(KEY_ENV)
        assert run_teacher(cfg, teacher_requests(cfg, 3), tmp_path)["skipped_cached"] == 3


def test_key_never_reaches_store_ledger_or_logs(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    # The server accepts only FAKE_KEY, so a success proves the key was sent.
    with ServerProcess(api_key=FAKE_KEY, rate_500=0.3, rate_429=0.2) as srv:
        cfg = teacher_cfg(srv.base_url, max_attempts=2)
        stats = run_teacher(cfg, teacher_requests(cfg, 50, marker={5: BAD_REQUEST}), tmp_path)
        assert stats["done"] > 0 and stats["retries"] > 0 and stats["failed_permanently"] >= 1
    # A wrong key: the run stops with an error naming the variable, not the key, although
    # the server echoes the rejected key in its error body (as OpenAI's does).
    # Its last four characters are checked too (OpenAI's messages show a masked key's tail);
    # they are letters no address, port or timestamp in a DEBUG log can contain by chance.
    wrong = "sk-wrong-key-9876ZYXWVUTSRQPONMQXZW"
    with ServerProcess(api_key=FAKE_KEY) as srv, pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, wrong)
        cfg = teacher_cfg(srv.base_url, concurrency=4)
        with pytest.raises(TeacherError, match=KEY_ENV) as err:
            run_teacher(cfg, teacher_requests(cfg, 200, start=100), tmp_path / "wrong")
        assert srv.stats()["total_calls"] < 200  # stopped early, did not walk the dataset
    out, errout = capfd.readouterr()
    texts = [out, errout, caplog.text, str(err.value), json.dumps(stats)]
    texts += [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    for secret in (FAKE_KEY, wrong, wrong[-4:]):
        assert not any(secret in t for t in texts)


def test_openai_endpoint_without_base_url_is_refused():
    cfg = TeacherConfig(name="openai", backend="openai", model="m", base_url=None)
    with pytest.raises(TeacherError, match="base_url"):
        OpenAITeacher(cfg)


def test_composed_teacher_configs_build(compose):
    for name in ("gpt-4o", "gpt-4o-mini"):
        cfg = compose([f"teacher={name}"]).teacher
        assert cfg.base_url is None and cfg.api_key_env == "OPENAI_API_KEY"
        assert (cfg.temperature, cfg.top_p) == (0.3, 0.95) and cfg.price_prompt_per_mtok > 0
        OpenAITeacher(cfg)
    cfg = compose(["teacher=openai", "teacher.base_url=http://127.0.0.1:8000/v1",
                   "teacher.model=Qwen/Qwen2.5-72B-Instruct"]).teacher
    OpenAITeacher(cfg)


# --- pure helpers -----------------------------------------------------------------------------

def test_retry_after_is_parsed_and_honoured():
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # past
    assert parse_retry_after({}) is None
    rng = random.Random(0)
    assert all(2.0 <= backoff_delay(1, 1.0, 60.0, 2.0, rng) <= 2.2 for _ in range(100))
    assert backoff_delay(1, 1.0, 5.0, 30.0, rng) == 5.0  # capped
    delays = [backoff_delay(a, 1.0, 8.0, None, rng) for a in (1, 4, 9) for _ in range(200)]
    assert max(delays[:200]) <= 1.0 and max(delays[200:400]) <= 8.0 and max(delays[400:]) > 4.0


def test_token_estimate_charges_max_tokens_plus_prompt():
    msgs = [{"role": "user", "content": "x" * 400}]
    assert estimate_tokens(msgs, 3200) == 100 + 4 + 3200
