"""A localhost OpenAI chat-completions server with deterministic fault injection, for tests.

Speaks POST /v1/chat/completions like the real API (non-streaming), and adds GET /stats: the
calls it received and successes it returned per request hash, the faults it injected and the
prompt/completion tokens it billed (successful responses only, as reported in `usage`).
Every decision is a function of (seed, request hash, how many times that hash was seen), so
a run is reproducible and a retry of a faulted call can succeed.

    python tests/openai_server.py --port 8000 --rate-429 0.1 --latency 0.2
    # in tests: with ServerProcess(rate_429=0.1) as srv: srv.base_url, srv.stats()
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, fields

from aiohttp import web

# Markers a test can put in a message to force a per-item behaviour.
ALWAYS_500 = "[[always-500]]"
BAD_REQUEST = "[[bad-request]]"


@dataclass
class ServerOptions:
    seed: int = 0
    # Per-call fault probabilities (independent of retries: a retried call draws again).
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    # A "timeout" call sleeps this long, then answers 504 (unbilled); set it above the
    # client's timeout.
    timeout_sleep_s: float = 2.0
    retry_after_s: float = 0.05
    # Per-content probabilities: the same request always gets the same completion.
    rate_length: float = 0.0
    rate_no_verdict: float = 0.0
    latency_s: float = 0.0
    api_key: str = ""  # see FakeServer._auth


def body_hash(model: str, messages: list, temperature: float, top_p: float, max_tokens: int) -> str:
    """The server's identity for a request: everything that determines its completion."""
    blob = json.dumps({"model": model, "messages": messages, "temperature": float(temperature),
                       "top_p": float(top_p), "max_tokens": int(max_tokens)},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


SERVER_ERROR = "The server had an error while processing your request."


def error(status: int, message: str, etype: str = "invalid_request_error",
          headers: dict | None = None) -> web.Response:
    """An error as OpenAI answers one."""
    return web.json_response({"error": {"message": message, "type": etype, "param": None, "code": None}},
                             status=status, headers=headers)


def request_hash(body: dict) -> str:
    return body_hash(body["model"], body["messages"], body.get("temperature", 1.0),
                     body.get("top_p", 1.0), _max_tokens(body))


def _max_tokens(body: dict) -> int:
    return int(body.get("max_tokens", body.get("max_completion_tokens", 16)))


# As the API answers a reasoning model (o1, o3, o4-mini) asked with a chat model's sampling fields.
REASONING_PREFIXES = ("o1", "o3", "o4")
REASONING_REJECTS = ("temperature", "top_p", "max_tokens")


class FakeServer:
    """What both fake servers share: the aiohttp app, its API-key check (on /v1/ paths), fault
    counters, the tokens billed, and the completion of a chat request."""

    def __init__(self, opts):
        self.opts = opts
        self.faults: Counter[str] = Counter()
        self.prompt_tokens = self.completion_tokens = 0
        self.app = web.Application(client_max_size=1024 ** 3, middlewares=[self._auth])

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        """With an api_key set, any other bearer token gets 401 and, like OpenAI's, an error
        echoing it."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.opts.api_key and request.path.startswith("/v1/") and token != self.opts.api_key:
            self.faults["401"] += 1
            return error(401, f"Incorrect API key provided: {token}.")
        return await handler(request)

    def completion(self, body: dict, response_id: str) -> dict:
        """The chat.completion of a request, billed. The same request always gets the same one:
        cut at max_tokens (rate_length), without a verdict (rate_no_verdict), or ending in a
        `Conclusion:` verdict."""
        o, messages = self.opts, body["messages"]
        h = request_hash(body)
        content_rng = random.Random(f"{o.seed}:{h}")
        truncated = content_rng.random() < o.rate_length
        no_verdict = content_rng.random() < o.rate_no_verdict
        verdict = "right" if int(h[:8], 16) % 2 else "wrong"
        analysis = (f"Let me check the student's solution step by step (ref {h[:12]}). "
                    "The setup is reasonable and the arithmetic in each step follows. ") * 3
        max_tokens = _max_tokens(body)
        if truncated:
            text, finish, completion_tokens = analysis[: 4 * max_tokens], "length", max_tokens
        else:
            text = analysis if no_verdict else f"{analysis}\n\nConclusion: {verdict} [END]"
            finish, completion_tokens = "stop", max(1, len(text) // 4)
        prompt_tokens = len("".join(m.get("content") or "" for m in messages)) // 4 + 4 * len(messages)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        return {"id": response_id, "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "finish_reason": finish,
                                                     "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


class FakeOpenAI(FakeServer):
    """POST /v1/chat/completions with faults, and its counters (single event loop: no locks)."""

    def __init__(self, opts: ServerOptions):
        super().__init__(opts)
        self.calls: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_get("/stats", self.stats)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "calls": dict(self.calls), "successes": dict(self.successes),
            "total_calls": sum(self.calls.values()), "total_successes": sum(self.successes.values()),
            "faults": dict(self.faults), "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "options": asdict(self.opts),
        })

    async def chat(self, request: web.Request) -> web.Response:
        o = self.opts
        try:
            body = await request.json()
        except ConnectionResetError:  # the client went away (a SIGKILL test): nothing to answer
            return web.Response(status=499)
        h = request_hash(body)
        n = self.calls[h]
        self.calls[h] += 1
        text_in = "".join(m.get("content") or "" for m in body["messages"])
        u = random.Random(f"{o.seed}:{h}:{n}").random()
        if o.latency_s:
            await asyncio.sleep(o.latency_s)
        unsupported = [k for k in REASONING_REJECTS if k in body] \
            if str(body["model"]).startswith(REASONING_PREFIXES) else []
        if unsupported:
            self.faults["400"] += 1
            return error(400, f"Unsupported parameter: '{unsupported[0]}' is not supported with this model.")
        if BAD_REQUEST in text_in:
            self.faults["400"] += 1
            return error(400, "This model's maximum context length is exceeded.")
        if ALWAYS_500 in text_in or o.rate_429 <= u < o.rate_429 + o.rate_500:
            self.faults["500"] += 1
            return error(500, SERVER_ERROR, "server_error")
        if u < o.rate_429:
            self.faults["429"] += 1
            return error(429, "Rate limit reached for requests.", "requests", headers={
                "retry-after-ms": str(int(o.retry_after_s * 1000)),
                "retry-after": str(math.ceil(o.retry_after_s)),
            })
        if u < o.rate_429 + o.rate_500 + o.rate_timeout:
            self.faults["timeout"] += 1
            await asyncio.sleep(o.timeout_sleep_s)
            return error(504, "Gateway timeout.", "timeout")
        self.successes[h] += 1
        return web.json_response(self.completion(body, f"chatcmpl-{h}-{self.calls[h]}"))


class ServerProcess:
    """A fake server as a child process (its own core and GIL): `with ServerProcess(rate_429=0.1)
    as s:` s.base_url, s.stats(). A subclass names another server script and its options."""

    script, options_cls = os.path.abspath(__file__), ServerOptions

    def __init__(self, **options):
        self.options = self.options_cls(**options)
        self.base_url = ""
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        args = [sys.executable, self.script, "--port", "0"]
        for f in fields(self.options):
            args += [f"--{f.name.replace('_', '-')}", str(getattr(self.options, f.name))]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"{os.path.basename(self.script)} did not start: {line!r}")
        self.base_url = line.split()[-1]
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def call(self, path: str, payload: dict | None = None) -> dict:
        """GET (or, with a payload, POST) one of the server's own endpoints (/stats, /admin/...)."""
        req = urllib.request.Request(self.base_url.rsplit("/v1", 1)[0] + path,
                                     data=None if payload is None else json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self.call("/stats")


def serve_cli(options_cls, make_server, argv: list[str] | None, description: str, port: int = 8000) -> None:
    """`python <server>.py [--port N] [--<option> V ...]`: one options dataclass, one aiohttp
    server on 127.0.0.1 until Ctrl-C (shared by this server and batch_server.py)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--port", type=int, default=port, help="0 picks a free port")
    for f in fields(options_cls):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = vars(ap.parse_args(argv))
    port = args.pop("port")
    server = make_server(options_cls(**args))

    async def run() -> None:
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    serve_cli(ServerOptions, FakeOpenAI, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
