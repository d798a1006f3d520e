"""Crash-safe file writing and line-numbered JSONL reading.

Every output a stage declares complete is written to a temporary name in the same directory
and renamed into place, so a crash never leaves a half-file that looks complete.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Malformed input data; the message names the file and line."""


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open a temp file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> Path:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")
    return Path(path)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Yield JSON objects; a malformed line, or one without a `required` field, raises
    DataError naming file and line."""
    for _, obj in iter_jsonl_lines(path, required):
        yield obj


def iter_jsonl_lines(path: str | Path, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line, so a caller can name the line of a record; a
    line that is not UTF-8 or not a JSON object raises DataError naming file and line (a text-mode
    read would raise UnicodeDecodeError with an offset into a read buffer and no file). A `.gz`
    file is read decompressed (the MATH test ships gzipped)."""
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
        for lineno, raw in enumerate(_raw_lines(f, path), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} is byte "
                                f"{e.start + 1} of the line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in required if k not in obj]
            if missing:
                raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            yield lineno, obj


def _raw_lines(f, path: Path) -> Iterator[bytes]:
    """The lines of an open file; a damaged gzip stream raises DataError naming the file."""
    try:
        yield from f
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e})") from None


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


def read_json(path: str | Path) -> Any:
    with Path(path).open(encoding="utf-8") as f:
        return json.load(f)
