"""Grade many (prediction, reference) pairs: certain answers in-process, the rest in worker
processes with a hard per-pair timeout.

Why not reuse a library's grader:
- math-verify bounds its work with `signal.alarm`, which only works on the main thread of the
  main process and cannot stop C-level big-integer work (`5^{5^{5^5}}`, `1000000!`);
- the Qwen2.5-Math / CFT evaluation grader rounds numbers to one decimal (0.04 == 0.01),
  accepts 500 for 5 through a percent rule, overflows on `10^{400}`, and runs serially.

A pair goes through, in order:
1. the cache of pairs seen in this Grader's life (pass@k, checkpoint selection repeat them);
2. the fast path (`check.fast_check`): the checker's own rules without the symbolic stage, plus
   the structural guards (`guards.costly`), in microseconds; it answers only where it is certain.
   No timeout applies in this process, so its work is bounded by the answers' size: an answer
   longer, deeper or more comma-separated than `check.FAST_MAX_*` goes to a worker untouched;
3. a worker running the full `check`. A worker that overruns its deadline is SIGKILLed and
   replaced, its pair gets `Verdict.TIMEOUT`, and the batch goes on. An exception inside a check
   is `Verdict.UNPARSABLE`; a worker that dies is replaced and its pair is UNPARSABLE too.
Workers are forked from a forkserver that has already imported and warmed up sympy and
latex2sympy, so a replacement costs milliseconds, and a worker's deadline starts only once it is
ready. The pool lives as long as the Grader: make one per evaluation run, not one per benchmark.

A caller's own judge (`Grader.run`: a module-level function, such as a dataset's free-text
judge) runs in the same workers under the same timeout.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import os
import pickle
import time
import weakref
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterable

from cft.answers.check import fast_check
from cft.answers.verdict import Verdict

CHECKERS = ("cft", "math-verify")
_READY = "ready"
_START_TIMEOUT_S = 120.0
_MAX_CHUNK = 16
# What a worker answers, instead of a result string, for a task that ran out of memory or raised;
# the batch says what they count as (`on_timeout`, `on_error`).
_OUT_OF_MEMORY, _RAISED = 0, 1


def _task_functions() -> dict:
    from cft.answers.check import check

    functions = {"cft": check}
    try:
        from cft.answers.mathverify import check_math_verify
        functions["math-verify"] = check_math_verify
    except ImportError:  # math-verify is optional for the "cft" checker
        pass
    return functions


def _serve(conn: Connection, memory_mb: int | None) -> None:
    """Worker loop: receive a chunk of (index, kind, args); send (index, result string) for each in order.

    `kind` is a checker's name or a module-level function (pickled by name, imported here)."""
    if memory_mb:
        import resource
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    functions = _task_functions()
    from cft.answers import _warm  # noqa: F401  (no-op when the forkserver preloaded it)
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        for index, kind, args in task:
            try:
                result = str((functions[kind] if isinstance(kind, str) else kind)(*args))
            except MemoryError:
                result = _OUT_OF_MEMORY  # out of its memory budget: a resource limit, like time
            except BaseException:  # a checker bug or RecursionError must never escape a check
                result = _RAISED
            conn.send((index, result))


class _Worker:
    def __init__(self, ctx, memory_mb: int | None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, memory_mb), daemon=True)
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


def _close_pool(pool: list[_Worker]) -> None:
    for w in pool:
        if not w.chunk and w.proc.is_alive():
            try:
                w.conn.send(None)
            except OSError:
                pass
        w.proc.join(timeout=1.0)
        w.kill()
    pool.clear()


class Grader:
    """`Grader(timeout, workers, checker).grade(pairs)` -> one `Verdict` per pair, in input order.

    `pairs` yields (prediction, reference); a third item (the answer_type older callers pass) is
    ignored. `checker` is "cft" (`cft.answers.check`) or "math-verify" (its parse/verify with
    their signal timeouts off; ours applies). Reusable: the workers and the cache live until
    `close()`. `stats` counts verdicts plus `cached`, `fast_path`, `killed` and `crashed` over
    the Grader's life; `durations` holds the seconds each pair of the last batch took, and
    `local_durations` the part of them spent in the calling process (cache and fast path).
    """

    def __init__(self, timeout: float = 5.0, workers: int | None = None, checker: str = "cft",
                 memory_mb: int | None = 4096, cache_size: int = 2**18):
        if checker not in CHECKERS:
            raise ValueError(f"checker={checker!r}: expected one of {CHECKERS}")
        self.timeout = float(timeout)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.checker = checker
        self.memory_mb = memory_mb
        self.cache_size = cache_size
        self.stats: collections.Counter = collections.Counter()
        self.durations: list[float] = []
        self.local_durations: list[float] = []
        self._cache: dict[tuple, str] = {}
        self._pool: list[_Worker] = []
        self._ctx = None
        self._finalizer = weakref.finalize(self, _close_pool, self._pool)  # workers never outlive the Grader

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        _close_pool(self._pool)

    def _spawn(self) -> _Worker:
        if self._ctx is None:
            self._ctx = mp.get_context("forkserver")
            self._ctx.set_forkserver_preload(["cft.answers._warm"])
        return _Worker(self._ctx, self.memory_mb)

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
            return fast_check(pred, ref)
        except Exception:  # the worker will say what the full check makes of it
            return None

    def grade(self, pairs: Iterable[tuple], progress: bool = False) -> list[Verdict]:
        """One `Verdict` per (prediction, reference) pair, in input order."""
        tasks = [(self.checker, (p[0], p[1])) for p in pairs]
        results = self._run_tasks(tasks, lambda args: self._fast(*args), progress,
                                  Verdict.TIMEOUT.value, Verdict.UNPARSABLE.value)
        verdicts = [Verdict(r) for r in results]
        for v in verdicts:
            self.stats[v.value] += 1
        return verdicts

    def run(self, function: Callable[..., object], items: Iterable[tuple], fallback: str) -> list[str]:
        """`str(function(*args))` for each argument tuple in `items`, in input order, computed in
        the workers under the same per-item timeout; `fallback` for an item that overruns, raises
        or kills its worker. `function` must be module-level: the workers import it by name.
        Results are cached like verdicts."""
        if function.__module__ == "__main__":
            raise ValueError(f"Grader.run: the workers cannot import {function.__qualname__} from __main__")
        pickle.dumps(function)  # a lambda or nested function fails here, not in a worker
        tasks = [(function, tuple(args)) for args in items]
        return self._run_tasks(tasks, lambda args: None, False, fallback, fallback)

    def _run_tasks(self, tasks: list[tuple], fast, progress: bool, on_timeout: str, on_error: str) -> list[str]:
        results: list[str | None] = [None] * len(tasks)
        self.durations = [0.0] * len(tasks)
        self.local_durations = [0.0] * len(tasks)
        queue: collections.deque[int] = collections.deque()
        # Timeouts are cached like any verdict: a degenerate model repeats its hostile answer.
        first: dict[tuple, int] = {}  # a task repeated within the batch runs once
        repeats: list[tuple[int, int]] = []
        for i, task in enumerate(tasks):
            start = time.perf_counter()
            if task in self._cache:
                results[i] = self._cache[task]
                self.stats["cached"] += 1
            elif task in first:
                repeats.append((i, first[task]))
                self.stats["cached"] += 1
            else:
                first[task] = i
                verdict = fast(task[1])
                if verdict is None:
                    queue.append(i)
                else:
                    results[i] = verdict.value
                    self.stats["fast_path"] += 1
            self.durations[i] = self.local_durations[i] = time.perf_counter() - start
        # Tasks that share their longer answer run back to back, so one worker parses it once (its cache).
        queue = collections.deque(sorted(queue, key=lambda i: max(map(str, tasks[i][1][:2]), key=len)))
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(tasks), initial=len(tasks) - len(queue), unit="pair", desc=f"grade[{self.checker}]")
        if queue:
            while len(self._pool) < min(self.workers, len(queue)):
                self._pool.append(self._spawn())
            self._run(tasks, queue, results, bar, on_timeout, on_error)
        if bar is not None:
            bar.close()
        for i, j in repeats:
            results[i] = results[j]
        if len(self._cache) + len(first) > self.cache_size:
            self._cache.clear()
        self._cache.update((task, results[i]) for task, i in first.items())
        return results  # type: ignore[return-value]

    def _run(self, tasks, queue, results, bar, on_timeout: str, on_error: str) -> None:
        # Tasks go out in small chunks to amortize pipe round trips; the worker answers each one
        # as it finishes, so the running task's deadline restarts at every answer.
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
                            self._finish(w, on_error, results, bar)
                        queue.extendleft(reversed(w.chunk))
                        self.stats["crashed"] += 1
                        self._replace(w)
                        break
                    if msg == _READY:
                        w.ready = True
                        continue
                    index, result = msg
                    assert index == w.chunk[0], "worker answered out of order"
                    if not isinstance(result, str):
                        result = on_timeout if result == _OUT_OF_MEMORY else on_error
                    self._finish(w, result, results, bar)
            now = time.monotonic()
            for w in list(self._pool):
                if w.chunk and now >= w.deadline:
                    self._finish(w, on_timeout, results, bar)
                    queue.extendleft(reversed(w.chunk))  # the rest of its chunk goes to other workers
                    self.stats["killed"] += 1
                    self._replace(w)
                elif not w.ready and now >= w.started + _START_TIMEOUT_S:
                    raise RuntimeError(f"grader worker not ready after {_START_TIMEOUT_S:.0f}s")

    def _finish(self, w: _Worker, result: str, results, bar) -> None:
        """Record the result of `w`'s running task; the next task of its chunk starts now."""
        index = w.chunk.popleft()
        now = time.monotonic()
        results[index] = result
        self.durations[index] = now - w.since
        w.since, w.deadline = now, (now + self.timeout if w.chunk else float("inf"))
        if bar is not None:
            bar.update(1)
