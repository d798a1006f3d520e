"""Grade many (prediction, reference) pairs in worker processes with a hard per-pair timeout.

Why not reuse a library's grader:
- math-verify bounds its work with `signal.alarm`, which only works on the main thread of the
  main process and cannot stop C-level big-integer work (`5^{5^{5^5}}`, `1000000!`);
- the Qwen2.5-Math / CFT evaluation grader rounds numbers to one decimal (0.04 == 0.01),
  accepts 500 for 5 through a percent rule, overflows on `10^{400}`, and runs serially.

Here every check runs in a worker process. A worker that overruns its deadline is SIGKILLed and
replaced, its pair gets `Verdict.TIMEOUT`, and the batch goes on. An exception inside a check is
`Verdict.UNPARSABLE`; a worker that dies is replaced and its pair is UNPARSABLE too. Workers are
forked from a forkserver that has already imported and warmed up sympy and latex2sympy, so a
replacement costs milliseconds, and a worker's deadline starts only once it is ready.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection, wait
from typing import Iterable

from cft.answers.check import Verdict
from cft.answers.normalize import normalize

CHECKERS = ("cft", "math-verify")
_READY = "ready"
_START_TIMEOUT_S = 120.0
_MAX_CHUNK = 16


def _checker(name: str):
    if name == "cft":
        from cft.answers.check import check
        return check
    if name == "math-verify":
        from cft.answers.mathverify import check_math_verify
        return check_math_verify
    raise ValueError(f"checker={name!r}: expected one of {CHECKERS}")


def _serve(conn: Connection, checker: str, memory_mb: int | None) -> None:
    """Worker loop: receive a chunk of (index, pred, ref, answer_type); send (index, verdict) for each in order."""
    if memory_mb:
        import resource
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    check = _checker(checker)
    from cft.answers import _warm  # noqa: F401  (no-op when the forkserver preloaded it)
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        for index, pred, ref, answer_type in task:
            try:
                verdict = Verdict(check(pred, ref, answer_type)).value
            except MemoryError:
                verdict = Verdict.TIMEOUT.value  # out of its memory budget: a resource limit, like time
            except BaseException:  # a checker bug or RecursionError must never escape a check
                verdict = Verdict.UNPARSABLE.value
            conn.send((index, verdict))


class _Worker:
    def __init__(self, ctx, checker: str, memory_mb: int | None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, checker, memory_mb), daemon=True)
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.chunk: collections.deque[int] = collections.deque()  # sent, not answered; [0] is running
        self.since = 0.0  # when chunk[0] started: its dispatch or the previous answer
        self.deadline = float("inf")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


class Grader:
    """`Grader(timeout, workers, checker).grade(pairs)` -> one `Verdict` per pair, in input order.

    `pairs` yields (prediction, reference, answer_type). `checker` is "cft" (`cft.answers.check`)
    or "math-verify" (its parse/verify with their signal timeouts off; ours applies).
    `stats` counts verdicts plus `fast_path`, `killed` and `crashed` over the Grader's life;
    `durations` holds the seconds each pair of the last batch took (0 on the fast path).
    """

    def __init__(self, timeout: float = 5.0, workers: int | None = None, checker: str = "cft",
                 memory_mb: int | None = 4096):
        if checker not in CHECKERS:
            raise ValueError(f"checker={checker!r}: expected one of {CHECKERS}")
        self.timeout = float(timeout)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.checker = checker
        self.memory_mb = memory_mb
        self.stats: collections.Counter = collections.Counter()
        self.durations: list[float] = []
        self._pool: list[_Worker] = []
        self._ctx = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._pool:
            if not w.chunk and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            w.proc.join(timeout=1.0)
            w.kill()
        self._pool = []

    def _spawn(self) -> _Worker:
        if self._ctx is None:
            self._ctx = mp.get_context("forkserver")
            self._ctx.set_forkserver_preload(["cft.answers._warm"])
        return _Worker(self._ctx, self.checker, self.memory_mb)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._pool[self._pool.index(w)] = self._spawn()

    # -- grading -----------------------------------------------------------------------------
    def _fast(self, pred, ref) -> Verdict | None:
        if pred is None:
            return Verdict.UNPARSABLE
        if self.checker != "cft":
            return None
        try:
            ref_n = normalize(str(ref))
            if normalize(str(pred), is_prediction="=" not in ref_n) == ref_n:
                return Verdict.EQUAL
        except Exception:
            pass
        return None

    def grade(self, pairs: Iterable[tuple], progress: bool = False) -> list[Verdict]:
        tasks = [(p[0], p[1], p[2] if len(p) > 2 else None) for p in pairs]
        results: list[Verdict | None] = [None] * len(tasks)
        self.durations = [0.0] * len(tasks)
        queue = collections.deque()
        for i, (pred, ref, _) in enumerate(tasks):
            fast = self._fast(pred, ref)
            if fast is None:
                queue.append(i)
            else:
                results[i] = fast
                self.stats["fast_path"] += 1
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), initial=len(tasks) - len(queue), unit="pair", desc=f"grade[{self.checker}]")
        if queue:
            while len(self._pool) < min(self.workers, len(queue)):
                self._pool.append(self._spawn())
            self._run(tasks, queue, results, bar)
        if bar is not None:
            bar.close()
        for v in results:
            self.stats[v.value] += 1
        return results  # type: ignore[return-value]

    def _run(self, tasks, queue, results, bar) -> None:
        # Pairs go out in small chunks to amortize pipe round trips; the worker answers each pair
        # as it finishes, so the running pair's deadline restarts at every answer.
        chunk_size = max(1, min(_MAX_CHUNK, len(queue) // (4 * len(self._pool))))
        while queue or any(w.chunk for w in self._pool):
            now = time.monotonic()
            for w in self._pool:
                if w.ready and not w.chunk and queue:
                    w.chunk.extend(queue.popleft() for _ in range(min(chunk_size, len(queue))))
                    w.conn.send([(i, *tasks[i]) for i in w.chunk])
                    w.since, w.deadline = now, now + self.timeout
            next_deadline = min(w.deadline if w.ready else w.started + _START_TIMEOUT_S for w in self._pool)
            for conn in wait([w.conn for w in self._pool], timeout=max(0.0, next_deadline - now)):
                w = next(w for w in self._pool if w.conn is conn)
                while w.conn.poll():
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):  # the worker died (segfault, OOM kill)
                        if not w.ready:
                            raise RuntimeError(f"grader worker failed to start (exit code {w.proc.exitcode})")
                        if w.chunk:
                            self._finish(w, Verdict.UNPARSABLE, results, bar)
                        queue.extendleft(reversed(w.chunk))
                        self.stats["crashed"] += 1
                        self._replace(w)
                        break
                    if msg == _READY:
                        w.ready = True
                        continue
                    index, verdict = msg
                    assert index == w.chunk[0], "worker answered out of order"
                    self._finish(w, Verdict(verdict), results, bar)
            now = time.monotonic()
            for w in list(self._pool):
                if w.chunk and now >= w.deadline:
                    self._finish(w, Verdict.TIMEOUT, results, bar)
                    queue.extendleft(reversed(w.chunk))  # the rest of its chunk goes to other workers
                    self.stats["killed"] += 1
                    self._replace(w)
                elif not w.ready and now >= w.started + _START_TIMEOUT_S:
                    raise RuntimeError(f"grader worker not ready after {_START_TIMEOUT_S:.0f}s")

    def _finish(self, w: _Worker, verdict: Verdict, results, bar) -> None:
        """Record the verdict of `w`'s running pair; the next pair of its chunk starts now."""
        index = w.chunk.popleft()
        now = time.monotonic()
        results[index] = verdict
        self.durations[index] = now - w.since
        w.since, w.deadline = now, (now + self.timeout if w.chunk else float("inf"))
        if bar is not None:
            bar.update(1)
