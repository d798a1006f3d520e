"""OpenAI-compatible teacher: many concurrent chat-completion calls, each result stored once.

Works against OpenAI and any server speaking its chat-completions protocol (vLLM, SGLang,
llama.cpp, Ollama). Built for 50K-600K critiques: completed keys are never requested again
(the ResultStore is the only source of truth), every API attempt is written to the cost
Ledger, transient errors are retried with exponential backoff and full jitter, and the
requests-per-minute / tokens-per-minute quotas are metered client-side so the run does not
live on 429s. The API key is read from the environment when a call is about to be made and
never enters a config, a log line, the store or the ledger.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

from cft.critique.base import Request
from cft.critique.ratelimit import RateLimiter
from cft.store import Ledger, ResultStore

log = logging.getLogger(__name__)

# Worth retrying: request timeout, conflict, rate limit, server errors (OpenAI's own client
# retries the same set).
RETRYABLE_STATUS = frozenset({408, 409, 429})
# The run is misconfigured (bad key, no access, unknown model/URL): every item would fail the
# same way, so stop instead of burning through the dataset.
FATAL_STATUS = frozenset({401, 403, 404})
# Per-message overhead of the chat format, in tokens (OpenAI's cookbook counts 3-4).
_MESSAGE_OVERHEAD_TOKENS = 4


class TeacherError(RuntimeError):
    """The teacher cannot run at all (missing key, rejected credentials, unknown model)."""


def read_api_key(env_var: str) -> str:
    """The key from `env_var`; an empty `env_var` means an unauthenticated local server."""
    if not env_var:
        return "EMPTY"  # the openai client insists on a value; local servers ignore it
    value = os.environ.get(env_var, "")
    if not value:
        raise TeacherError(
            f"environment variable {env_var} is not set (teacher.api_key_env={env_var}); "
            f"export it, or set teacher.api_key_env='' for a server without authentication"
        )
    return value


# OpenAI's reasoning models (o1, o3, o4-mini...) reject `temperature`, `top_p` and `max_tokens`
# ("Unsupported parameter"); they take `max_completion_tokens`, which also bounds their hidden
# reasoning tokens. Recognised by model id unless `teacher.reasoning` says.
_REASONING_PREFIXES = ("o1", "o3", "o4")


def is_reasoning_model(cfg: Any) -> bool:
    explicit = getattr(cfg, "reasoning", None)
    if explicit is not None:
        return bool(explicit)
    return str(cfg.model).split("/")[-1].startswith(_REASONING_PREFIXES)


def request_body(cfg: Any, messages: Sequence[dict]) -> dict:
    """The chat-completions body of one critique request, the same for the synchronous client and
    the Batch API's input file: the sampling fields a chat model takes, or, for a reasoning model,
    only `max_completion_tokens` (it samples at its own fixed settings)."""
    body = {"model": cfg.model, "messages": list(messages)}
    if is_reasoning_model(cfg):
        body["max_completion_tokens"] = int(cfg.max_tokens)
    else:
        body.update(temperature=float(cfg.temperature), top_p=float(cfg.top_p), max_tokens=int(cfg.max_tokens))
    return body


def estimate_tokens(messages: Sequence[dict], max_tokens: int) -> int:
    """What a request costs against the tokens-per-minute quota, before it is sent.

    OpenAI charges its TPM limiter max(max_tokens, ...) + the prompt estimated from its
    character count (~4 characters per token in English) at admission, not the usage reported
    afterwards; we meter the same way, so our client-side bucket and theirs agree.
    """
    chars = sum(len(m.get("content") or "") for m in messages)
    return chars // 4 + _MESSAGE_OVERHEAD_TOKENS * len(messages) + max_tokens


def parse_retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `retry-after` (seconds or date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, base_s: float, max_s: float, retry_after_s: float | None,
                  rng: random.Random) -> float:
    """Exponential backoff with full jitter (AWS architecture blog); Retry-After wins when given."""
    if retry_after_s is not None:
        # At least what the server asked for, plus a little spread so waiters do not return
        # in lockstep.
        return min(max_s, retry_after_s * (1.0 + 0.1 * rng.random()))
    return rng.uniform(0.0, min(max_s, base_s * 2 ** (attempt - 1)))


@dataclass
class _Outcome:
    status: str  # ok | retry | failed | fatal
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_after_s: float | None = None
    result: dict | None = None


def _usage(obj: Any) -> tuple[int, int]:
    usage = getattr(obj, "usage", None)
    if usage is None:
        return 0, 0
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


class OpenAITeacher:
    """Teacher backend for `teacher.backend=openai` (see conf/teacher/openai.yaml).

    `cfg` is a TeacherConfig (dataclass or DictConfig); read fields: model, base_url,
    api_key_env, temperature, top_p, max_tokens, concurrency, requests_per_minute,
    tokens_per_minute, max_attempts, timeout_s, backoff_base_s, backoff_max_s.
    """

    def __init__(self, cfg: Any, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        if not cfg.model:
            raise TeacherError("teacher.model is empty: set the model name the endpoint serves")
        # validate() catches an unset `???` base_url; an explicit teacher.base_url=null is caught
        # here: without it a local model name (and the key) would go to api.openai.com.
        if cfg.name == "openai" and not cfg.base_url:
            raise TeacherError("teacher=openai needs teacher.base_url=http://HOST:PORT/v1 "
                               "(use teacher=gpt-4o or gpt-4o-mini for the OpenAI API)")
        if int(cfg.max_attempts) < 1 or int(cfg.concurrency) < 1:
            raise TeacherError("teacher.max_attempts and teacher.concurrency must be >= 1")

    def generate(self, requests: Sequence[Request], store: ResultStore, ledger: Ledger) -> dict:
        """Fill `store` with one result per request key it lacks; return run statistics.

        Items already in the store cost nothing (no call). An item that still fails after
        `max_attempts` is left out of the store (a later run retries it) and listed under
        `failures`; its last ledger row has status "failed".
        """
        t0 = time.monotonic()
        pending: list[Request] = []
        seen: set[str] = set()
        stats: dict[str, Any] = {
            "requested": len(requests), "skipped_cached": 0, "skipped_duplicate": 0,
            "done": 0, "failed_permanently": 0, "attempts": 0, "retries": 0,
            "finish_length": 0, "prompt_tokens": 0, "completion_tokens": 0,
            "failures": [], "elapsed_s": 0.0,
        }
        for req in requests:
            if req.key in store:
                stats["skipped_cached"] += 1
            elif req.key in seen:
                stats["skipped_duplicate"] += 1
            else:
                seen.add(req.key)
                pending.append(req)
        if pending:
            api_key = read_api_key(self.cfg.api_key_env)
            asyncio.run(self._run(pending, store, ledger, api_key, stats))
        stats["elapsed_s"] = round(time.monotonic() - t0, 3)
        return stats

    # --- the event loop -----------------------------------------------------------------

    async def _run(self, pending: list[Request], store: ResultStore, ledger: Ledger,
                   api_key: str, stats: dict) -> None:
        import openai
        from tqdm.auto import tqdm

        cfg = self.cfg
        client = openai.AsyncOpenAI(base_url=cfg.base_url or None, api_key=api_key,
                                    # Retries are ours: each attempt gets a ledger row and
                                    # is charged to the rate limiter, which the client's
                                    # hidden retries would bypass.
                                    max_retries=0, timeout=float(cfg.timeout_s))
        limiter = RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute)
        in_flight = asyncio.Semaphore(int(cfg.concurrency))
        # Items alive at once (in flight or backing off). Bounded so 600K requests do not
        # become 600K tasks, yet wide enough that items sleeping in backoff do not idle the
        # connection slots.
        window = asyncio.Semaphore(4 * int(cfg.concurrency))
        rng = random.Random()
        bar = tqdm(total=len(pending), desc=f"teacher {cfg.model}", unit="req",
                   disable=not self.progress, mininterval=1.0, dynamic_ncols=True)
        fatal: list[BaseException] = []
        stop = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        async def item(req: Request) -> None:
            try:
                await self._item(req, client, limiter, in_flight, rng, store, ledger,
                                 api_key, stats)
            except Exception as e:  # noqa: BLE001 - re-raised below, after in-flight work settles
                fatal.append(e)
                stop.set()
            finally:
                window.release()
                bar.update(1)
                bar.set_postfix(retries=stats["retries"], failed=stats["failed_permanently"],
                                refresh=False)

        try:
            for req in pending:
                await window.acquire()
                if fatal:
                    break
                task = asyncio.create_task(item(req))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks and not fatal:
                # Wait for all items, or for the first fatal error, whichever comes first.
                everything = asyncio.gather(*tasks, return_exceptions=True)
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
            if fatal:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise fatal[0]
        finally:
            bar.close()
            await client.close()

    async def _item(self, req: Request, client, limiter: RateLimiter, in_flight: asyncio.Semaphore,
                    rng: random.Random, store: ResultStore, ledger: Ledger, api_key: str,
                    stats: dict) -> None:
        cfg = self.cfg
        max_attempts = int(cfg.max_attempts)
        cost = estimate_tokens(req.messages, int(cfg.max_tokens))
        for attempt in range(1, max_attempts + 1):
            async with in_flight:
                await limiter.acquire(cost)
                started = time.monotonic()
                out = await self._call(req, client, api_key)
                latency = time.monotonic() - started
            stats["attempts"] += 1
            stats["prompt_tokens"] += out.prompt_tokens
            stats["completion_tokens"] += out.completion_tokens
            if out.status == "retry" and attempt == max_attempts:
                out.status = "failed"
            status = {"ok": "ok", "retry": f"retry:{out.reason}", "failed": "failed",
                      "fatal": f"fatal:{out.reason}"}[out.status]
            # Ledger before store: a crash between the two re-requests the item on resume,
            # which the ledger then shows as the second billed call it really is.
            ledger.record(key=req.key, attempt=attempt, status=status,
                          prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                          latency_s=latency)
            if out.status == "ok":
                out.result.update(attempts=attempt, meta=req.meta)
                store.append(out.result)
                stats["done"] += 1
                stats["finish_length"] += out.result["finish_reason"] == "length"
                return
            if out.status == "fatal":
                raise TeacherError(
                    f"{cfg.base_url or 'api.openai.com'} rejected the request ({out.reason}); "
                    f"check teacher.model={cfg.model!r}, teacher.base_url and the key in "
                    f"${cfg.api_key_env}"
                )
            if out.status == "failed":
                stats["failed_permanently"] += 1
                stats["failures"].append({"key": req.key, "attempts": attempt, "reason": out.reason})
                log.warning("teacher: request %s failed permanently after %d attempt(s): %s",
                            req.key, attempt, out.reason)
                return
            stats["retries"] += 1
            delay = backoff_delay(attempt, float(cfg.backoff_base_s), float(cfg.backoff_max_s),
                                  out.retry_after_s, rng)
            log.debug("teacher: %s attempt %d: %s; retrying in %.2fs", req.key, attempt,
                      out.reason, delay)
            await asyncio.sleep(delay)

    async def _call(self, req: Request, client, api_key: str) -> _Outcome:
        """One HTTP attempt, classified. Exceptions other than the API's own propagate."""
        import openai

        cfg = self.cfg
        try:
            resp = await client.chat.completions.create(**request_body(cfg, req.messages))
        except openai.APITimeoutError:
            return _Outcome("retry", "timeout")
        except openai.APIConnectionError as e:
            return _Outcome("retry", f"connection: {_redact(type(e.__cause__ or e).__name__, api_key)}")
        except openai.APIStatusError as e:
            code = e.status_code
            p, c = _usage(getattr(e, "body", None))
            reason = f"http_{code}"
            if code in FATAL_STATUS:
                detail = _redact(str(e.message), api_key)[:300]
                return _Outcome("fatal", f"{reason}: {detail}", p, c)
            if code in RETRYABLE_STATUS or code >= 500:
                return _Outcome("retry", reason, p, c, parse_retry_after(e.response.headers))
            detail = _redact(str(e.message), api_key)[:300]
            return _Outcome("failed", f"{reason}: {detail}", p, c)
        except openai.APIResponseValidationError:
            return _Outcome("retry", "bad_response")

        p, c = _usage(resp)
        if not resp.choices:
            return _Outcome("retry", "no_choices", p, c)
        choice = resp.choices[0]
        result = {
            "key": req.key,
            "text": choice.message.content or "",
            "finish_reason": choice.finish_reason or "",
            "model": resp.model or cfg.model,
            "prompt_tokens": p,
            "completion_tokens": c,
        }
        return _Outcome("ok", "", p, c, result=result)


def _redact(text: str, secret: str) -> str:
    """Servers echo (parts of) a rejected key in error bodies; never let it reach a log."""
    if secret and len(secret) >= 8 and secret != "EMPTY":
        text = text.replace(secret, "***")
        # OpenAI prints "sk-abc***wxyz": the visible tail is enough to identify a key.
        text = text.replace(secret[-4:], "***")
    return text
