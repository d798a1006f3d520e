"""OpenAI Batch API teacher (`teacher.mode=batch`): the same requests at half the price.

The requests go out as JSONL files (one line per item, `custom_id` = the item's store key),
uploaded with purpose `batch` and run as `/v1/chat/completions` batches with a 24 h window;
the batches are polled with backoff and their output and error files fed through the same
store, ledger and (in the stage) verdict parsing as the synchronous path.

Exactly-once across kills and re-runs rests on `critique/batches.jsonl`, an append-only log
fsynced at every line:

- `uploaded` (file id + the keys in it) is written before the batch is created, `created`
  (batch id) the moment the API returns it, `done` (final status + failed keys) after its
  results are stored. A re-run polls and collects every created-not-done batch instead of
  submitting its items again.
- A process killed between create and record leaves an `uploaded` line without `created`: the
  re-run looks the batch up on the server by its input file (`GET /v1/batches`) and adopts it;
  only a file that no batch was created from is submitted.
- Items already stored are never put in a batch again. Items that come back in the error file,
  are missing from an expired / cancelled / failed batch, go into a new batch, up to
  `teacher.max_attempts` batches per item; the reasons are kept for the rejects.

Ledger rows (one per item and batch) carry the batch price (`teacher.batch_discount` of the
list price) and what the synchronous API would have charged. We write the client ourselves
because no library covers resume and re-submission; the HTTP protocol is the `openai` client's.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from cft.critique.api import FATAL_STATUS, TeacherError, _redact, read_api_key
from cft.critique.base import Request
from cft.critique.batch_files import ENDPOINT, BatchLog, parse_result_line, request_line, split_batches
from cft.store import Ledger, ResultStore

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")


class BatchesPending(RuntimeError):
    """Batches are still running after `teacher.batch_wait_s`; the same command collects them."""


def _newest(client, since: float):
    """The server's batches, newest first, down to those created at `since`."""
    for batch in client.batches.list(limit=100):
        if batch.created_at < since:
            return
        yield batch


def _transient(e: Exception) -> bool:
    import openai

    if isinstance(e, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    return isinstance(e, openai.APIStatusError) and e.status_code not in FATAL_STATUS


class BatchTeacher:
    """Teacher backend for `teacher.backend=openai teacher.mode=batch`.

    Reads the OpenAITeacher's fields (model, base_url, api_key_env, sampling, max_attempts,
    prices) plus batch_max_requests, batch_max_bytes, batch_poll_s, batch_poll_max_s,
    batch_wait_s and batch_discount.
    """

    def __init__(self, cfg: Any, batch_log: str | Path, progress: bool = True):
        self.cfg = cfg
        self.log_path = Path(batch_log)
        self.progress = progress
        self.name = str(cfg.name)
        if not cfg.model:
            raise TeacherError("teacher.model is empty: set the model name the endpoint serves")
        if int(cfg.max_attempts) < 1:
            raise TeacherError("teacher.max_attempts must be >= 1")

    # --- the driver ----------------------------------------------------------------------

    def generate(self, requests: Sequence[Request], store: ResultStore, ledger: Ledger,
                 wait: bool = True) -> dict:
        """Store one result per request key the store lacks, through batches; return statistics.

        wait=False submits what is missing and collects what has finished, without waiting.
        """
        import openai

        t0 = time.monotonic()
        by_key = {}
        for req in requests:
            by_key.setdefault(req.key, req)
        stats: dict[str, Any] = {
            "mode": "batch", "requested": len(requests), "skipped_cached": 0, "done": 0,
            "failed_permanently": 0, "attempts": 0, "batches_created": 0, "batches_adopted": 0,
            "batches_recovered": 0,
            "batch_status": {}, "poll_errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
            "failures": [], "elapsed_s": 0.0,
        }
        stats["skipped_cached"] = sum(k in store for k in by_key)
        with BatchLog(self.log_path) as blog:
            active = self._active(blog)
            needs_api = bool(active) or any(k not in store for k in by_key)
            if not needs_api:
                return self._finish(stats, blog, by_key, store, t0)
            api_key = read_api_key(self.cfg.api_key_env)
            client = openai.OpenAI(base_url=self.cfg.base_url or None, api_key=api_key,
                                   max_retries=0, timeout=float(self.cfg.timeout_s))
            seen_ledger = {(r.get("batch_id"), r["key"]) for r in ledger.rows() if r.get("batch_id")}
            try:
                self._adopt_orphans(client, blog, stats)
                self._loop(client, blog, by_key, store, ledger, seen_ledger, stats, wait, api_key)
            finally:
                client.close()
            return self._finish(stats, blog, by_key, store, t0)

    def _finish(self, stats, blog, by_key, store, t0) -> dict:
        attempts, reasons = self._failures(blog)
        for key in by_key:
            if key not in store and attempts[key] >= int(self.cfg.max_attempts):
                stats["failures"].append({"key": key, "attempts": attempts[key],
                                          "reason": reasons[key]})
        stats["failed_permanently"] = len(stats["failures"])
        stats["pending_batches"] = len(self._active(blog))
        stats["elapsed_s"] = round(time.monotonic() - t0, 3)
        return stats

    def _active(self, blog: BatchLog) -> dict[str, dict]:
        """Created batches not yet collected: batch id -> its `created` row."""
        done = {r["batch_id"] for r in blog.events("done", self.name)}
        return {r["batch_id"]: r for r in blog.events("created", self.name) if r["batch_id"] not in done}

    def _failures(self, blog: BatchLog) -> tuple[Counter, dict[str, str]]:
        """Per key: how many collected batches failed it, and the last reason."""
        attempts: Counter = Counter()
        reasons: dict[str, str] = {}
        for row in blog.events("done", self.name):
            for key, reason in row.get("failed", {}).items():
                attempts[key] += 1
                reasons[key] = reason
        return attempts, reasons

    def _loop(self, client, blog, by_key, store, ledger, seen_ledger, stats, wait, api_key) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        deadline = time.monotonic() + (float(cfg.batch_wait_s) if wait else 0.0)
        poll = float(cfg.batch_poll_s)
        rng = random.Random()
        bar = tqdm(total=len(by_key), initial=sum(k in store for k in by_key), unit="item",
                   desc=f"batch {cfg.model}", disable=not self.progress, dynamic_ncols=True)
        try:
            while True:
                self._submit(client, blog, by_key, store, stats)
                active = self._active(blog)
                changed = False
                for batch_id, created in active.items():
                    try:
                        batch = client.batches.retrieve(batch_id)
                    except Exception as e:  # noqa: BLE001 - classified just below
                        if not _transient(e):
                            raise TeacherError(f"batch {batch_id}: {_redact(str(e), api_key)[:300]}") from e
                        stats["poll_errors"] += 1
                        log.info("batch %s: retrieve failed (%s); polling again", batch_id,
                                 type(e).__name__)
                        continue
                    stats["batch_status"][batch_id] = batch.status
                    if batch.status in TERMINAL:
                        self._collect(client, blog, batch, created, by_key, store, ledger,
                                      seen_ledger, stats)
                        changed = True
                        bar.n = sum(k in store for k in by_key)
                active = self._active(blog)
                counts = Counter(stats["batch_status"].get(b, "submitted") for b in active)
                bar.set_postfix(submitted=len(blog.events("created", self.name)),
                                in_progress=sum(counts.values()),
                                completed=len(blog.events("done", self.name)),
                                failed=sum(1 for r in blog.events("done", self.name)
                                           if r["status"] != "completed"), refresh=True)
                todo = self._todo(blog, by_key, store)
                if not active and not todo:
                    return
                if changed and todo:
                    continue  # resubmit failed items at once
                if time.monotonic() >= deadline:
                    if not wait:
                        return
                    raise BatchesPending(
                        f"{len(active)} batch(es) of teacher {self.name} still running "
                        f"({dict(counts)}); their ids are in {self.log_path}. Run the same command "
                        f"again (e.g. stages=[critique]) to collect them")
                # Poll with backoff (jittered), back to the start whenever something finished.
                poll = float(cfg.batch_poll_s) if changed else min(float(cfg.batch_poll_max_s), poll * 1.5)
                time.sleep(min(poll * (0.9 + 0.2 * rng.random()), max(0.0, deadline - time.monotonic())))
        finally:
            bar.close()

    # --- submit --------------------------------------------------------------------------

    def _todo(self, blog: BatchLog, by_key: dict[str, Request], store: ResultStore) -> list[Request]:
        """Items not stored, not in a running batch, with attempts left."""
        in_flight = {k for row in self._active(blog).values() for k in row["keys"]}
        uploaded_only = self._uploaded_only(blog)
        in_flight |= {k for row in uploaded_only for k in row["keys"]}
        attempts, _ = self._failures(blog)
        limit = int(self.cfg.max_attempts)
        return [r for k, r in by_key.items()
                if k not in store and k not in in_flight and attempts[k] < limit]

    def _uploaded_only(self, blog: BatchLog) -> list[dict]:
        created = {r["input_file_id"] for r in blog.events("created", self.name)}
        return [r for r in blog.events("uploaded", self.name) if r["input_file_id"] not in created]

    def _submit(self, client, blog, by_key, store, stats) -> None:
        cfg = self.cfg
        todo = self._todo(blog, by_key, store)
        if not todo:
            return
        attempts, _ = self._failures(blog)
        lines = [request_line(cfg, r) for r in todo]
        for group in split_batches(lines, int(cfg.batch_max_requests), int(cfg.batch_max_bytes)):
            keys = [todo[i].key for i in group]
            data = b"".join(lines[i] for i in group)
            upload = self._with_retries(lambda: client.files.create(
                file=(f"cft-{self.name}-{len(blog.rows)}.jsonl", data, "application/jsonl"),
                purpose="batch"))
            # Written before the create: a kill after the create is recovered by the file id.
            blog.append(event="uploaded", teacher=self.name, input_file_id=upload.id, keys=keys,
                        attempt=1 + max(attempts[k] for k in keys), bytes=len(data))
            self._create(client, blog, upload.id, keys, stats)

    def _create(self, client, blog, input_file_id: str, keys: list[str], stats) -> None:
        cfg = self.cfg
        for attempt in range(1, int(cfg.max_attempts) + 1):
            try:
                batch = client.batches.create(
                    input_file_id=input_file_id, endpoint=ENDPOINT,
                    completion_window=str(cfg.batch_completion_window),
                    metadata={"cft_teacher": self.name, "cft_input_file": input_file_id})
                break
            except Exception as e:  # noqa: BLE001 - classified just below
                if not _transient(e) or attempt == int(cfg.max_attempts):
                    raise TeacherError(f"{cfg.base_url or 'api.openai.com'}: creating a batch failed "
                                       f"({type(e).__name__}); check teacher.model={cfg.model!r}, "
                                       f"teacher.base_url and ${cfg.api_key_env}") from None
                # The create may have reached the server before the error: adopt that batch
                # rather than make a second one (its items would be billed twice).
                batch = self._find(client, {input_file_id}, time.time() - 3600).get(input_file_id)
                if batch is not None:
                    stats["batches_recovered"] += 1
                    break
                time.sleep(min(float(cfg.backoff_max_s), float(cfg.backoff_base_s) * 2 ** (attempt - 1)))
        blog.append(event="created", teacher=self.name, batch_id=batch.id,
                    input_file_id=input_file_id, keys=keys)
        stats["batches_created"] += 1
        log.info("batch %s created: %d items (teacher %s)", batch.id, len(keys), self.name)

    def _find(self, client, file_ids: set[str], since: float) -> dict:
        """The server's batches (created after `since`) made from these input files."""
        found = {}
        for batch in self._poll_retries(lambda: list(_newest(client, since))):
            if batch.input_file_id in file_ids:
                found.setdefault(batch.input_file_id, batch)
        return found

    def _adopt_orphans(self, client, blog, stats) -> None:
        """Uploaded files whose create was never recorded: adopt the batch, or create it now."""
        orphans = {r["input_file_id"]: r for r in self._uploaded_only(blog)}
        if not orphans:
            return
        since = min(r["at"] for r in orphans.values()) - 3600  # clock skew margin
        for file_id, batch in self._find(client, set(orphans), since).items():
            row = orphans.pop(file_id)
            blog.append(event="created", teacher=self.name, batch_id=batch.id,
                        input_file_id=file_id, keys=row["keys"], adopted=True)
            stats["batches_adopted"] += 1
            log.info("batch %s: created before a crash, adopted", batch.id)
        for file_id, row in orphans.items():
            self._create(client, blog, file_id, row["keys"], stats)

    def _with_retries(self, call):
        """An upload, retried on transient errors (a duplicate file is never run nor billed)."""
        cfg = self.cfg
        for attempt in range(1, int(cfg.max_attempts) + 1):
            try:
                return call()
            except Exception as e:  # noqa: BLE001 - classified just below
                if not _transient(e) or attempt == int(cfg.max_attempts):
                    raise TeacherError(f"{cfg.base_url or 'api.openai.com'}: batch submission failed "
                                       f"({type(e).__name__}); check teacher.model={cfg.model!r}, "
                                       f"teacher.base_url and ${cfg.api_key_env}") from None
                time.sleep(min(float(cfg.backoff_max_s), float(cfg.backoff_base_s) * 2 ** (attempt - 1)))

    # --- collect -------------------------------------------------------------------------

    def _download(self, client, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self._poll_retries(lambda: client.files.content(file_id).text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _poll_retries(self, call):
        # A finished batch's files stay downloadable for days: on giving up, a re-run collects.
        delay = float(self.cfg.backoff_base_s)
        for attempt in range(1, 3 * int(self.cfg.max_attempts) + 1):
            try:
                return call()
            except Exception as e:  # noqa: BLE001
                if not _transient(e) or attempt == 3 * int(self.cfg.max_attempts):
                    raise
                time.sleep(delay)
                delay = min(float(self.cfg.backoff_max_s), delay * 2)

    def _collect(self, client, blog, batch, created, by_key, store, ledger, seen_ledger, stats) -> None:
        """Store a finished batch's results; record its failed keys (and why) as `done`."""
        keys = set(created["keys"])
        fails, _ = self._failures(blog)
        attempt = 1 + max((fails[k] for k in keys), default=0)
        failed: dict[str, str] = {}
        for row in self._download(client, batch.output_file_id):
            key, body, reason = parse_result_line(row)
            if key not in keys:
                continue
            if body is None:
                failed[key] = reason
                continue
            usage = body.get("usage") or {}
            p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            if (batch.id, key) not in seen_ledger:  # a re-collection after a crash bills nothing new
                ledger.record(key=key, attempt=attempt, status="ok", prompt_tokens=p,
                              completion_tokens=c, batch_id=batch.id)
                seen_ledger.add((batch.id, key))
                stats["prompt_tokens"] += p
                stats["completion_tokens"] += c
            stats["attempts"] += 1
            if key not in store:
                choice = body["choices"][0]
                req = by_key.get(key)
                store.append({"key": key, "text": (choice.get("message") or {}).get("content") or "",
                              "finish_reason": choice.get("finish_reason") or "",
                              "model": body.get("model") or self.cfg.model, "prompt_tokens": p,
                              "completion_tokens": c, "attempts": attempt, "batch_id": batch.id,
                              "meta": req.meta if req else {}})
                stats["done"] += 1
        for row in self._download(client, batch.error_file_id):
            key, _, reason = parse_result_line(row)
            if key in keys and key not in store:
                failed[key] = reason
        why = f"batch {batch.status}"
        if batch.status == "failed" and batch.errors and batch.errors.data:
            why += ": " + "; ".join(f"{e.code}: {e.message}" for e in batch.errors.data)[:200]
        for key in keys:
            if key not in store and key not in failed:
                failed[key] = f"missing from output ({why})"
        last = attempt >= int(self.cfg.max_attempts)
        for key, reason in failed.items():
            if (batch.id, key) not in seen_ledger:
                ledger.record(key=key, attempt=attempt, batch_id=batch.id,
                              status=f"{'failed' if last else 'retry'}:{reason[:80]}")
                seen_ledger.add((batch.id, key))
            stats["attempts"] += 1
        blog.append(event="done", teacher=self.name, batch_id=batch.id, status=batch.status,
                    n_ok=len(keys) - len(failed), failed=failed)
        log.info("batch %s %s: %d stored, %d failed", batch.id, batch.status,
                 len(keys) - len(failed), len(failed))
