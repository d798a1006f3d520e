"""The `data` stage: load, normalize, de-duplicate, subsample, (optionally) decontaminate ->
records.jsonl.

De-duplicating drops every repeated row: a record with the same question, noisy response and
shipped critique from the same source as an earlier one (`cft.records.same_example`); the first
is kept and data/summary.json counts the rest (`n_duplicates_dropped`). Record ids are then
unique, which the critique stage relies on (it matches critiques to records by id); a collision
is an error.

The records stream from the loader to records.jsonl (issue #24: WebInstruct-CFT's 600K rows
held as Python objects took GBs): what is held is bounded by the rows' count, not their text
(a 16-byte digest per distinct row and each id; flagged records are spooled to disk).
Subsampling (`dataset.limit`) reads the data twice: once to count the rows, once to keep the
seeded shuffle's first `limit` (held). Generating noisy responses holds the records, as the
generator answers them all at once.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Callable, Iterable, Iterator

from cft.config import noisy_generators
from cft.datasets import load_records
from cft.io import write_json, write_jsonl
from cft.paths import RunPaths
from cft.records import Record, same_example


def run(cfg, paths: RunPaths) -> dict:
    ds = cfg.dataset
    dropped = Counter()
    if noisy_generators(ds):
        records: Iterable[Record] = _generated(cfg, dropped)
        again = lambda: records  # noqa: E731
    else:
        records = _loaded(ds, dropped) if ds.limit is None else _subsample(ds, dropped)
        again = lambda: _loaded(ds, Counter())  # noqa: E731
    return _write(cfg, paths, records, dropped, again)


def _loaded(ds, dropped: Counter) -> Iterator[Record]:
    """The dataset's records, repeated rows dropped (counted in `dropped["duplicates"]`), and for
    One-Shot CFT (`dataset.problems`) only every response to those problems."""
    seen: set[bytes] = set()
    wanted = set(ds.problems) if ds.problems else None
    for rec in load_records(ds):
        digest = _digest(same_example(rec))
        if digest in seen:
            dropped["duplicates"] += 1
            continue
        seen.add(digest)
        if wanted is None or rec.id.split("|")[0] in wanted:
            yield rec


def _digest(fields: tuple) -> bytes:
    """16 bytes that tell one `same_example` tuple (strings or None) from another: each field
    length-prefixed, so no two tuples share the hashed bytes."""
    h = hashlib.blake2b(digest_size=16)
    for field in fields:
        data = b"" if field is None else field.encode("utf-8", "surrogatepass")
        h.update(b"\x00" if field is None else len(data).to_bytes(8, "little") + b"\x01")
        h.update(data)
    return h.digest()


def _subsample(ds, dropped: Counter) -> Iterator[Record]:
    """A deterministic subsample (seeded shuffle), so reruns and sweeps see the same data: the
    records that random.Random(dataset.seed).shuffle puts first, in that order. Shuffling the
    positions gives the permutation shuffling the records gave, so only the kept ones are held."""
    n = sum(1 for _ in _loaded(ds, Counter()))
    if n <= ds.limit:
        yield from _loaded(ds, dropped)
        return
    order = list(range(n))
    random.Random(ds.seed).shuffle(order)
    slot = {pos: k for k, pos in enumerate(order[: ds.limit])}
    kept: list[Record | None] = [None] * ds.limit
    for pos, rec in enumerate(_loaded(ds, dropped)):
        if (k := slot.get(pos)) is not None:
            kept[k] = rec
    yield from kept


def _generated(cfg, dropped: Counter) -> list[Record]:
    """One generated noisy response per distinct question (the subsample drawn before any
    generation, so a generator answers only the questions that are kept)."""
    from cft.data.generated import generate_noisy_responses, unique_questions

    loaded = unique_questions(list(_loaded(cfg.dataset, dropped)))
    if not loaded:
        raise ValueError(f"dataset {cfg.dataset.name!r} produced no records; check dataset.* keys")
    if cfg.dataset.limit is not None and len(loaded) > cfg.dataset.limit:
        random.Random(cfg.dataset.seed).shuffle(loaded)
        loaded = loaded[: cfg.dataset.limit]
    return generate_noisy_responses(loaded, cfg.dataset, cfg.model, cfg.paths.cache, cfg.vllm)


def _write(cfg, paths: RunPaths, records: Iterable[Record], dropped: Counter,
           again: Callable[[], Iterable[Record]]) -> dict:
    """records.jsonl as the records stream by (atomically: an error leaves no file), checked
    against the benchmarks on the way; then the decontamination report and the summary. The
    report is cheap, so it is always written; dropping flagged items is opt-in."""
    from cft.data.decontam import BenchmarkNgrams, FlaggedSpool

    ngrams = BenchmarkNgrams(cfg.paths.benchmarks, cfg.dataset.decontam_ngram)
    flagged = FlaggedSpool(paths.decontam_report)
    sources, correct = Counter(), Counter()
    decontaminate = bool(cfg.dataset.decontaminate)

    def rows() -> Iterator[dict]:
        for rec in unique_ids(records, cfg.dataset.name, again):
            row = rec.to_dict()
            sources[row["noisy_source"]] += 1
            correct[row["response_correct"]] += 1
            if hits := ngrams.matches(row["question"]):
                flagged.add(row["id"], hits)
                if decontaminate:
                    continue
            yield row
        if not sources:
            raise ValueError(f"dataset {cfg.dataset.name!r} produced no records; check dataset.* keys")

    try:
        n_written = write_jsonl(paths.records, rows())
        n_records = sum(sources.values())
        flagged.write_report(ngrams, n_records)
    finally:
        flagged.close()
    summary = {
        "n_records": n_records,
        "n_duplicates_dropped": dropped["duplicates"],
        "noisy_sources": dict(sources),
        "response_correct": dict(correct),
        "contaminated": flagged.n,
    }
    if cfg.dataset.decontaminate:
        summary["n_records_after_decontamination"] = n_written
    write_json(paths.data_summary, summary)
    return summary


def unique_ids(records: Iterable[Record], dataset: str, again: Callable[[], Iterable[Record]]) -> Iterator[Record]:
    """The records, each id once: two different examples under one id would get one critique.
    Holds the ids, not the records: the error reads `again()` (the records anew) for the other
    record's question (repeated rows were dropped before, so two records under one id differ)."""
    seen: set[str] = set()
    for rec in records:
        if rec.id in seen:
            first = next(r for r in again() if r.id == rec.id and same_example(r) != same_example(rec))
            raise ValueError(f"dataset {dataset!r}: two different records share the id {rec.id!r} "
                             f"(questions {first.question[:60]!r} and {rec.question[:60]!r}); "
                             f"record ids must be unique")
        seen.add(rec.id)
        yield rec
