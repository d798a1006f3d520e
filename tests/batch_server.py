"""A localhost OpenAI Batch API server with deterministic fault injection, for tests.

Speaks the real protocol (what the `openai` client sends and parses): POST /v1/files
(multipart, purpose=batch), GET /v1/files/{id}/content, POST /v1/batches, GET /v1/batches
(newest first, `after`/`limit` pagination), GET /v1/batches/{id}, POST /v1/batches/{id}/cancel.
Each retrieve moves a batch one step: validating -> in_progress -> finalizing -> completed (a
batch over the per-batch limits goes to `failed`). Completions, the API-key check and the token
billing are tests/openai_server.py's own: deterministic per request, with a `Conclusion:` verdict.

Faults: the Nth batch created `expired` with part of its items done (the rest in the error
file as `batch_expired`, as OpenAI does); items answered with a 500 in the error file; a 500
on every Nth retrieve; a create that makes its batch but answers 500; and POST
/admin/kill-on-create {"pid", "nth"}: SIGKILL that process while its nth create is being
answered (the batch exists, the client never learns its id).
GET /stats: per custom_id how often it was submitted / answered / failed, the tokens billed
(successful lines only) and every batch's status.

    with BatchServerProcess(expire_batch=2) as srv: srv.base_url, srv.stats()
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass

from aiohttp import web

from openai_server import SERVER_ERROR, FakeServer, ServerProcess, error, serve_cli

# A request whose messages contain this is answered with a 500 in the error file, every time.
ALWAYS_ERROR = "[[always-error]]"


@dataclass
class BatchServerOptions:
    seed: int = 0
    max_requests_per_batch: int = 50_000
    max_bytes_per_batch: int = 200 * 1024 * 1024
    # 1-based index of the created batch that expires (0: none), and the share of it done.
    expire_batch: int = 0
    expire_done_fraction: float = 0.5
    # Per (custom_id, submission) probability of a 500 line in the error file.
    rate_item_error: float = 0.0
    # The Nth create (1-based, 0: none) makes the batch but answers 500: a lost response.
    lose_create: int = 0
    # Every Nth GET /v1/batches/{id} answers 500 (0: never).
    retrieve_500_every: int = 0
    rate_length: float = 0.0
    rate_no_verdict: float = 0.0
    api_key: str = ""


class FakeBatchAPI(FakeServer):
    def __init__(self, opts: BatchServerOptions):
        super().__init__(opts)
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.order: list[str] = []  # batch ids, oldest first
        self.submissions: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.retrieves = 0
        self.kill: dict | None = None
        self.creates_since_kill_armed = 0
        app = self.app
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}", self.file_info)
        app.router.add_get("/v1/files/{id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list)
        app.router.add_get("/v1/batches/{id}", self.retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel)
        app.router.add_post("/admin/kill-on-create", self.arm_kill)
        app.router.add_get("/stats", self.stats)

    # --- files -----------------------------------------------------------------------------

    def _new_file(self, data: bytes, purpose: str, filename: str) -> dict:
        fid = f"file-{len(self.files) + 1:06d}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                           "filename": filename, "purpose": purpose, "status": "processed", "_data": data}
        return self.files[fid]

    @staticmethod
    def _public(obj: dict) -> dict:
        """A file or batch as the API shows it (without the server's own `_` fields)."""
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        part = form.get("file")
        if form.get("purpose") != "batch" or part is None:
            return error(400, "purpose must be 'batch' and a file is required")
        return web.json_response(self._public(self._new_file(part.file.read(), "batch", part.filename)))

    async def file_info(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        return web.json_response(self._public(f)) if f else error(404, "No such File object")

    async def file_content(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        if not f:
            return error(404, "No such File object")
        return web.Response(body=f["_data"], content_type="application/octet-stream")

    # --- batches ---------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        f = self.files.get(body.get("input_file_id", ""))
        if f is None:
            return error(400, "input_file_id not found")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return error(400, "endpoint must be /v1/chat/completions, completion_window 24h")
        lines = [json.loads(l) for l in f["_data"].decode().splitlines() if l.strip()]
        now = int(time.time())
        bid = f"batch_{len(self.batches) + 1:06d}"
        batch = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": f["id"], "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now,
                 "expires_at": now + 86400, "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "metadata": body.get("metadata"), "_lines": lines, "_n": len(self.batches) + 1}
        problems = []
        if len(lines) > self.opts.max_requests_per_batch:
            problems.append({"code": "too_many_requests", "message": f"{len(lines)} requests > "
                             f"{self.opts.max_requests_per_batch}", "line": None, "param": None})
        if f["bytes"] > self.opts.max_bytes_per_batch:
            problems.append({"code": "file_too_large", "message": "input file too large",
                             "line": None, "param": None})
        if len({l["custom_id"] for l in lines}) != len(lines):
            problems.append({"code": "duplicate_custom_id", "message": "duplicate custom_id",
                             "line": None, "param": None})
        if problems:
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": problems})
        else:
            for l in lines:
                self.submissions[l["custom_id"]] += 1
        self.batches[bid] = batch
        self.order.append(bid)
        if len(self.batches) == self.opts.lose_create:
            self.faults["create_lost"] += 1
            return error(500, SERVER_ERROR, "server_error")
        if self.kill is not None:
            self.creates_since_kill_armed += 1
            if self.creates_since_kill_armed == self.kill["nth"]:
                self.faults["kill_on_create"] += 1
                os.kill(self.kill["pid"], signal.SIGKILL)
                self.kill = None
                await asyncio.sleep(0.2)  # the client is gone before it could read the answer
        return web.json_response(self._public(batch))

    async def list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", 20))
        ids = list(reversed(self.order))
        after = request.query.get("after")
        if after in ids:
            ids = ids[ids.index(after) + 1:]
        page = ids[:limit]
        data = [self._public(self.batches[i]) for i in page]
        return web.json_response({"object": "list", "data": data, "first_id": page[0] if page else None,
                                  "last_id": page[-1] if page else None, "has_more": len(ids) > limit})

    async def retrieve(self, request: web.Request) -> web.Response:
        self.retrieves += 1
        if self.opts.retrieve_500_every and self.retrieves % self.opts.retrieve_500_every == 0:
            self.faults["retrieve_500"] += 1
            return error(500, SERVER_ERROR, "server_error")
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return error(404, "No such Batch object")
        self._advance(batch)
        return web.json_response(self._public(batch))

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return error(404, "No such Batch object")
        if batch["status"] in ("validating", "in_progress"):
            batch.update(status="cancelling", cancelling_at=int(time.time()))
        return web.json_response(self._public(batch))

    def _advance(self, batch: dict) -> None:
        now = int(time.time())
        status = batch["status"]
        if status == "validating":
            batch.update(status="in_progress", in_progress_at=now)
        elif status == "in_progress":
            if batch["_n"] == self.opts.expire_batch:
                self._finish(batch, "expired", self.opts.expire_done_fraction)
            else:
                batch.update(status="finalizing", finalizing_at=now)
        elif status == "finalizing":
            self._finish(batch, "completed", 1.0)
        elif status == "cancelling":
            self._finish(batch, "cancelled", 0.0)

    def _finish(self, batch: dict, status: str, done_fraction: float) -> None:
        lines = batch["_lines"]
        n_done = int(len(lines) * done_fraction)
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            if i >= n_done:  # a cancelled batch just stops: the request is in neither file
                self.failures[cid] += 1
                if status == "expired":  # OpenAI lists unfinished requests in the error file
                    err.append({"id": f"batch_req_{batch['id']}_{i}", "custom_id": cid, "response": None,
                                "error": {"code": "batch_expired",
                                          "message": "This request could not be executed before the "
                                                     "completion window expired."}})
                continue
            u = random.Random(f"{self.opts.seed}:{cid}:{self.submissions[cid]}").random()
            text_in = "".join(m.get("content") or "" for m in line["body"]["messages"])
            if u < self.opts.rate_item_error or ALWAYS_ERROR in text_in:
                self.faults["item_500"] += 1
                self.failures[cid] += 1
                err.append({"id": f"batch_req_{batch['id']}_{i}", "custom_id": cid, "error": None,
                            "response": {"status_code": 500, "request_id": f"req_{i}", "body": {
                                "error": {"message": SERVER_ERROR, "type": "server_error"}}}})
                continue
            out.append({"id": f"batch_req_{batch['id']}_{i}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": f"req_{i}",
                                     "body": self.completion(line["body"], f"chatcmpl-{batch['id']}-{i}")}})
            self.successes[cid] += 1
        now = int(time.time())
        batch.update(status=status, **{f"{status}_at": now})
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(lines) - len(out)}
        if out:
            batch["output_file_id"] = self._new_file(_jsonl(out), "batch_output", "output.jsonl")["id"]
        if err:
            batch["error_file_id"] = self._new_file(_jsonl(err), "batch_output", "errors.jsonl")["id"]

    # --- test hooks ------------------------------------------------------------------------

    async def arm_kill(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.kill = {"pid": int(body["pid"]), "nth": int(body.get("nth", 1))}
        self.creates_since_kill_armed = 0
        return web.json_response({"armed": self.kill})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "submissions": dict(self.submissions), "successes": dict(self.successes),
            "failures": dict(self.failures), "faults": dict(self.faults),
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "batches": {b: {"status": self.batches[b]["status"], "n": len(self.batches[b]["_lines"])}
                        for b in self.order},
            "options": asdict(self.opts),
        })


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


class BatchServerProcess(ServerProcess):
    """The server as a child process: `with BatchServerProcess(expire_batch=2) as s:`."""

    script, options_cls = os.path.abspath(__file__), BatchServerOptions

    def kill_on_create(self, pid: int, nth: int = 1) -> None:
        self.call("/admin/kill-on-create", {"pid": pid, "nth": nth})


def main(argv: list[str] | None = None) -> None:
    serve_cli(BatchServerOptions, FakeBatchAPI, argv, __doc__.splitlines()[0], port=0)


if __name__ == "__main__":
    main()
