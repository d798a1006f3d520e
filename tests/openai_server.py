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
    # When set, any other bearer token gets 401 (and, like OpenAI's, an error echoing it).
    api_key: str = ""


def body_hash(model: str, messages: list, temperature: float, top_p: float, max_tokens: int) -> str:
    """The server's identity for a request: everything that determines its completion."""
    blob = json.dumps({"model": model, "messages": messages, "temperature": float(temperature),
                       "top_p": float(top_p), "max_tokens": int(max_tokens)},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _error(status: int, message: str, etype: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": etype, "code": None}},
                             status=status, headers=headers)


class FakeOpenAI:
    """The aiohttp application and its counters (single event loop: no locks needed)."""

    def __init__(self, opts: ServerOptions):
        self.opts = opts
        self.calls: Counter[str] = Counter()
        self.successes: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_get("/v1/models", self.models)
        self.app.router.add_get("/stats", self.stats)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "calls": dict(self.calls), "successes": dict(self.successes),
            "total_calls": sum(self.calls.values()), "total_successes": sum(self.successes.values()),
            "faults": dict(self.faults), "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "options": asdict(self.opts),
        })

    async def chat(self, request: web.Request) -> web.Response:
        o = self.opts
        if o.api_key:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if token != o.api_key:
                self.faults["401"] += 1
                return _error(401, f"Incorrect API key provided: {token}.", "invalid_request_error")
        try:
            body = await request.json()
        except ConnectionResetError:  # the client went away (a SIGKILL test): nothing to answer
            return web.Response(status=499)
        messages = body["messages"]
        h = body_hash(body["model"], messages, body.get("temperature", 1.0),
                      body.get("top_p", 1.0), body.get("max_tokens", 16))
        n = self.calls[h]
        self.calls[h] += 1
        text_in = "".join(m.get("content") or "" for m in messages)
        u = random.Random(f"{o.seed}:{h}:{n}").random()
        if o.latency_s:
            await asyncio.sleep(o.latency_s)
        if BAD_REQUEST in text_in:
            self.faults["400"] += 1
            return _error(400, "This model's maximum context length is exceeded.", "invalid_request_error")
        if ALWAYS_500 in text_in:
            self.faults["500"] += 1
            return _error(500, "The server had an error while processing your request.", "server_error")
        if u < o.rate_429:
            self.faults["429"] += 1
            return _error(429, "Rate limit reached for requests.", "requests", headers={
                "retry-after-ms": str(int(o.retry_after_s * 1000)),
                "retry-after": str(math.ceil(o.retry_after_s)),
            })
        if u < o.rate_429 + o.rate_500:
            self.faults["500"] += 1
            return _error(500, "The server had an error while processing your request.", "server_error")
        if u < o.rate_429 + o.rate_500 + o.rate_timeout:
            self.faults["timeout"] += 1
            await asyncio.sleep(o.timeout_sleep_s)
            return _error(504, "Gateway timeout.", "timeout")
        return self._complete(body, h, messages, text_in)

    def _complete(self, body: dict, h: str, messages: list, text_in: str) -> web.Response:
        o = self.opts
        content_rng = random.Random(f"{o.seed}:{h}")
        truncated = content_rng.random() < o.rate_length
        no_verdict = content_rng.random() < o.rate_no_verdict
        verdict = "right" if int(h[:8], 16) % 2 else "wrong"
        analysis = (f"Let me check the student's solution step by step (ref {h[:12]}). "
                    "The setup is reasonable and the arithmetic in each step follows. ") * 3
        max_tokens = int(body.get("max_tokens", 16))
        if truncated:
            text, finish, completion_tokens = analysis[: 4 * max_tokens], "length", max_tokens
        else:
            text = analysis if no_verdict else f"{analysis}\n\nConclusion: {verdict} [END]"
            finish, completion_tokens = "stop", max(1, len(text) // 4)
        prompt_tokens = len(text_in) // 4 + 4 * len(messages)
        self.successes[h] += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        return web.json_response({
            "id": f"chatcmpl-{h}-{self.calls[h]}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


async def _serve(server, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, runner.addresses[0][1]


def get_stats(base_url: str) -> dict:
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/stats", timeout=10) as r:
        return json.loads(r.read())


class ServerProcess:
    """The server as a child process (its own core and GIL): `with ServerProcess(...) as s:`."""

    def __init__(self, **options):
        self.options = ServerOptions(**options)
        self.base_url = ""
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        args = [sys.executable, os.path.abspath(__file__), "--port", "0"]
        for f in fields(ServerOptions):
            args += [f"--{f.name.replace('_', '-')}", str(getattr(self.options, f.name))]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.proc.kill()
            raise RuntimeError(f"fake OpenAI server did not start: {line!r}")
        self.base_url = line.split()[-1]
        return self.base_url


    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def stats(self) -> dict:
        return get_stats(self.base_url)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()



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
        runner, bound = await _serve(server, port)
        print(f"listening on http://127.0.0.1:{bound}/v1", flush=True)
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
