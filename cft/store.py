"""Append-only JSONL result store and cost ledger: durable, resumable, exactly-once.

Each teacher result is appended and flushed as it arrives, so it survives the process being
killed (SIGKILL, OOM, preemption). fsync runs at most once a second and on close: an fsync per
line blocks the teacher's event loop for milliseconds per result on a busy or network disk
(it halved API throughput in bench/teacher_throughput.py); an OS crash or power loss can
therefore lose the last second of results, which a resumed run requests again (never twice
in the store). A crash can tear only the last
line; on open the torn tail is moved to a `.torn` side file (kept for inspection, never
silently buried) and the file is truncated to its last complete line.

One writer per file: opening takes an exclusive `flock` on `<file>.lock` and a second process
(say, the same sweep cell submitted twice) fails at once, naming the file and the holder's pid,
instead of interleaving lines. The kernel drops the lock when its holder dies, even by SIGKILL,
so a resumed run never finds a stale lock. The pipeline takes the same kind of lock on the whole
run directory (`take_lock`).

Output manifests (`manifest`, `damage`): the size and SHA-256 of each file a finished stage
wrote, kept in its stage marker, so a damaged or deleted output is noticed before the stage is
skipped on the strength of the marker alone.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator


def _repair_tail(path: Path) -> int:
    """Truncate a torn last line (no trailing newline or not JSON); return bytes removed.

    Reads only the file's tail: a 600K-result store is gigabytes.
    """
    if not path.exists():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # Find the start of the last line: the byte after the last newline that is not the
        # file's final byte.
        end = size - 1
        tail = b""
        pos = size
        start = 0
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            nl = tail.rfind(b"\n", 0, end - pos)
            if nl >= 0:
                start = pos + nl + 1
                break
        f.seek(start)
        last = f.read(size - start)
        cut = size
        if not last.endswith(b"\n"):
            cut = start
        else:
            try:
                json.loads(last)
            except json.JSONDecodeError:
                cut = start
        if cut == size:
            return 0
        with open(path.with_suffix(path.suffix + ".torn"), "ab") as side:
            side.write(last + (b"" if last.endswith(b"\n") else b"\n"))
        f.truncate(cut)
    return size - cut


_CHUNK = 1 << 16


_FSYNC_EVERY_S = 1.0


class StoreBusy(RuntimeError):
    """Another process holds the writer lock of a file or of a run directory."""


def take_lock(lock_path: Path, what: str):
    """Take an exclusive `flock` on `lock_path` and write our pid into it; returns the open file
    (closing it, or the process dying by any signal, releases the lock). Raises StoreBusy naming
    `what` and the holder's pid when another process holds it.

    The file descriptor is not inherited by child processes unless passed on explicitly
    (`pass_fds`), so a child never holds the lock by accident."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock_path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise StoreBusy(f"{what} is being written by another process (pid {holder}, lock "
                        f"{lock_path}); wait for it or stop it, then run again") from None
    note_holder(f, str(os.getpid()))
    return f


def note_holder(lockfile, text: str) -> None:
    """Replace what a held lock file says about its holder (shown by StoreBusy)."""
    lockfile.seek(0)
    lockfile.truncate()
    lockfile.write(text)
    lockfile.flush()


def _take_lock(path: Path):
    return take_lock(path.with_name(path.name + ".lock"), str(path))


class _AppendLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfile = _take_lock(self.path)
        self.repaired_bytes = _repair_tail(self.path)
        self._lock = threading.Lock()
        self._f = open(self.path, "ab")
        self._synced_at = time.monotonic()

    def _append(self, row: dict) -> int:
        """Write one line and flush it to the OS (fsync at most every second); return its offset."""
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            offset = self._f.tell()
            self._f.write(line)
            self._f.flush()
            now = time.monotonic()
            if now - self._synced_at >= _FSYNC_EVERY_S:
                os.fsync(self._f.fileno())
                self._synced_at = now
        return offset

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
        self._f.close()
        self._lockfile.close()  # releases the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def rows(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


class ResultStore(_AppendLog):
    """Teacher outputs keyed by request key; the first result stored for a key wins.

    Holds only key -> byte offset in memory (600K critiques with their metadata are
    gigabytes); `get` reads the row back from disk.
    """

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._offset: dict[str, int] = {}
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip():
                    self._offset.setdefault(json.loads(line)["key"], offset)
                offset += len(line)
        self._reader = open(self.path, "rb")

    def __contains__(self, key: str) -> bool:
        return key in self._offset

    def __len__(self) -> int:
        return len(self._offset)

    def get(self, key: str) -> dict | None:
        offset = self._offset.get(key)
        if offset is None or offset < 0:
            return None
        with self._lock:
            self._reader.seek(offset)
            return json.loads(self._reader.readline())

    def append(self, result: dict) -> None:
        key = result["key"]
        with self._lock:
            if key in self._offset:
                return
            self._offset[key] = -1  # claimed: a concurrent append of the same key is a no-op
        try:
            self._offset[key] = self._append(result)
        except BaseException:
            del self._offset[key]
            raise

    def close(self) -> None:
        self._reader.close()
        super().close()


class Ledger(_AppendLog):
    """One row per API attempt (not per item): tokens, status and dollars.

    `discount` scales the list prices (0.5 for the Batch API); such rows also carry what the
    synchronous API would have charged (`sync_cost_usd`). `teacher` tags every row, so one
    ledger can hold several teachers' rows (one Ledger open at a time: one writer per file).
    """

    def __init__(self, path: str | Path, price_prompt_per_mtok: float = 0.0,
                 price_completion_per_mtok: float = 0.0, discount: float = 1.0, teacher: str = ""):
        super().__init__(path)
        self.price_prompt = price_prompt_per_mtok
        self.price_completion = price_completion_per_mtok
        self.discount = discount
        self.teacher = teacher

    def record(self, *, key: str, attempt: int, status: str, prompt_tokens: int = 0,
               completion_tokens: int = 0, latency_s: float = 0.0, batch_id: str = "") -> None:
        list_cost = (prompt_tokens * self.price_prompt + completion_tokens * self.price_completion) / 1e6
        row = {"key": key, "attempt": attempt, "status": status,
               "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
               "cost_usd": round(list_cost * self.discount, 8), "latency_s": round(latency_s, 4)}
        if self.teacher:
            row["teacher"] = self.teacher
        if batch_id:
            row["batch_id"] = batch_id
        if self.discount != 1.0:
            row["sync_cost_usd"] = round(list_cost, 8)
        self._append(row)

    def totals(self, teacher: str | None = None) -> dict:
        """Sums over all rows (or one teacher's); `sync_cost_usd` = the same at list price."""
        t = {"attempts": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
             "sync_cost_usd": 0.0}
        for row in self.rows():
            if teacher is not None and row.get("teacher", "") != teacher:
                continue
            t["attempts"] += 1
            t["prompt_tokens"] += row["prompt_tokens"]
            t["completion_tokens"] += row["completion_tokens"]
            t["cost_usd"] += row["cost_usd"]
            t["sync_cost_usd"] += row.get("sync_cost_usd", row["cost_usd"])
        t["cost_usd"] = round(t["cost_usd"], 6)
        t["sync_cost_usd"] = round(t["sync_cost_usd"], 6)
        return t


# --- output manifests ------------------------------------------------------------------------
_FULL_HASH_MAX = 64 << 20  # bytes: larger files are hashed by their first and last MiB
_EDGE = 1 << 20


def file_digest(path: Path) -> dict:
    """{size, sha256} of a file up to 64 MiB; for a larger one (weight shards, big JSONL files)
    {size, sha256_first_last_mib}: the SHA-256 of its first and last MiB, so checking a 15 GB
    model before its stage is skipped reads 2 MiB per shard. That catches a deleted, truncated or
    re-written file, not a flipped byte in the middle of a big one."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _FULL_HASH_MAX:
            return {"size": size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}
        h = hashlib.sha256(f.read(_EDGE))
        f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
    return {"size": size, "sha256_first_last_mib": h.hexdigest()}


def manifest(root: Path, files: Iterable[Path]) -> dict[str, dict]:
    """{path relative to root: file_digest} for `files` (relative, so a moved or copied run
    directory still checks)."""
    return {str(Path(p).relative_to(root)): file_digest(Path(p)) for p in files}


def damage(root: Path, recorded: dict[str, dict]) -> str | None:
    """Why the files of a manifest are no longer as recorded (the first such file: missing,
    another size, other content), or None when every one is intact."""
    for name, digest in recorded.items():
        path = Path(root) / name
        if not path.is_file():
            return f"output {name} is missing"
        size = path.stat().st_size
        if size != digest["size"]:
            return f"output {name} has {size} bytes, not the {digest['size']} it was written with"
        if file_digest(path) != digest:
            return f"output {name} has changed since it was written (SHA-256)"
    return None
