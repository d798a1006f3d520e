"""The `data` stage: load, normalize, de-duplicate, subsample, (optionally) decontaminate ->
records.jsonl.

De-duplicating drops every repeated row: a record with the same question, noisy response and
shipped critique from the same source as an earlier one (`cft.records.same_example`); the first
is kept and data/summary.json counts the rest (`n_duplicates_dropped`). Record ids are then
unique, which the critique stage relies on (it matches critiques to records by id); a collision
is an error.
"""
from __future__ import annotations

import random
from collections import Counter

from cft.config import noisy_generators
from cft.datasets import load_records
from cft.io import write_json, write_jsonl
from cft.paths import RunPaths
from cft.records import Record, drop_duplicates


def run(cfg, paths: RunPaths) -> dict:
    loaded, n_duplicates = drop_duplicates(list(load_records(cfg.dataset)))
    if cfg.dataset.problems:  # One-Shot CFT: every response to these problems, nothing else
        wanted = set(cfg.dataset.problems)
        loaded = [r for r in loaded if r.id.split("|")[0] in wanted]
    generates = bool(noisy_generators(cfg.dataset))
    if generates:
        from cft.data.generated import unique_questions

        loaded = unique_questions(loaded)
    if not loaded:
        raise ValueError(f"dataset {cfg.dataset.name!r} produced no records; check dataset.* keys")
    if cfg.dataset.limit is not None and len(loaded) > cfg.dataset.limit:
        # Deterministic subsample (seeded shuffle), so reruns and sweeps see the same data; before
        # any generation, so a generator answers only the questions that are kept.
        random.Random(cfg.dataset.seed).shuffle(loaded)
        loaded = loaded[: cfg.dataset.limit]
    if generates:
        from cft.data.generated import generate_noisy_responses

        loaded = generate_noisy_responses(loaded, cfg.dataset, cfg.model, cfg.paths.cache, cfg.vllm)
    check_unique_ids(loaded, cfg.dataset.name)
    records = [r.to_dict() for r in loaded]
    summary = {
        "n_records": len(records),
        "n_duplicates_dropped": n_duplicates,
        "noisy_sources": dict(Counter(r["noisy_source"] for r in records)),
        "response_correct": dict(Counter(r["response_correct"] for r in records)),
    }
    # The report is cheap, so it is always written; dropping flagged items is opt-in.
    from cft.data.decontam import decontamination_report

    report = decontamination_report(records, cfg.paths.benchmarks, cfg.dataset.decontam_ngram)
    write_json(paths.decontam_report, report)
    summary["contaminated"] = len(report["flagged"])
    if cfg.dataset.decontaminate:
        flagged = {f["id"] for f in report["flagged"]}
        records = [r for r in records if r["id"] not in flagged]
        summary["n_records_after_decontamination"] = len(records)
    write_jsonl(paths.records, records)
    write_json(paths.data_summary, summary)
    return summary


def check_unique_ids(records: list[Record], dataset: str) -> None:
    """Every record id once: two different examples under one id would get one critique."""
    first: dict[str, Record] = {}
    for rec in records:
        other = first.setdefault(rec.id, rec)
        if other is not rec:
            raise ValueError(f"dataset {dataset!r}: two different records share the id {rec.id!r} "
                             f"(questions {other.question[:60]!r} and {rec.question[:60]!r}); "
                             f"record ids must be unique")
