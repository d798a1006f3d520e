"""The `data` stage: load, normalize, subsample, (optionally) decontaminate -> records.jsonl."""
from __future__ import annotations

import random
from collections import Counter

from cft.datasets import load_records
from cft.io import write_json, write_jsonl
from cft.paths import RunPaths


def run(cfg, paths: RunPaths) -> dict:
    loaded = list(load_records(cfg.dataset))
    if cfg.dataset.problems:  # One-Shot CFT: every response to these problems, nothing else
        wanted = set(cfg.dataset.problems)
        loaded = [r for r in loaded if r.id.split("|")[0] in wanted]
    if cfg.dataset.noisy_generator:
        from cft.data.generated import unique_questions

        loaded = unique_questions(loaded)
    if not loaded:
        raise ValueError(f"dataset {cfg.dataset.name!r} produced no records; check dataset.* keys")
    if cfg.dataset.limit is not None and len(loaded) > cfg.dataset.limit:
        # Deterministic subsample (seeded shuffle), so reruns and sweeps see the same data; before
        # any generation, so a generator answers only the questions that are kept.
        random.Random(cfg.dataset.seed).shuffle(loaded)
        loaded = loaded[: cfg.dataset.limit]
    if cfg.dataset.noisy_generator:
        from cft.data.generated import generate_noisy_responses

        loaded = generate_noisy_responses(loaded, cfg.dataset, cfg.model, cfg.paths.cache, cfg.vllm)
    records = [r.to_dict() for r in loaded]
    summary = {
        "n_records": len(records),
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
