"""The `critique` stage: one teacher output per record, parsed, filtered, audited.

Outputs (run_dir/critique/): cache.jsonl (raw teacher outputs, append-only, the resume
point), ledger.jsonl (tokens and dollars per attempt), critiques.jsonl (usable training
targets), rejects.jsonl (each unusable output with its reason), summary.json.
"""
from __future__ import annotations

import random
from collections import Counter

from omegaconf import OmegaConf

from cft.critique.base import Request, request_key
from cft.critique.prompts import load_prompt
from cft.critique.store import Ledger, ResultStore
from cft.critique.teachers import build_teacher
from cft.critique.verdict import parse_verdict, reject_reason
from cft.data.record import UNKNOWN, is_verified
from cft.io import read_jsonl, write_json, write_jsonl
from cft.paths import RunPaths

OUTPUT_FIELD = {"critique": "critique", "teacher_solution": "teacher_solution"}


def _sampling(cfg) -> dict:
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}


def build_requests(cfg, records: list[dict]) -> list[Request]:
    target = cfg.method.target
    prompt = load_prompt(cfg.teacher.prompt if target == "critique" else cfg.teacher.solution_prompt)
    requests = []
    for rec in records:
        response = rec["noisy_response"] if target == "critique" else None
        key = request_key(model=cfg.teacher.model or cfg.teacher.name, prompt_name=prompt.name,
                          prompt_version=prompt.version, sampling=_sampling(cfg.teacher),
                          question=rec["question"], response=response)
        requests.append(Request(key=key, messages=prompt.messages(rec["question"], response),
                                meta={"id": rec["id"], "target": target}))
    return requests


def _released(records: list[dict]) -> list[dict]:
    results = []
    for rec in records:
        if rec.get("released_critique") is None:
            raise ValueError(f"teacher=released: record {rec['id']} ships no critique "
                             f"(dataset {rec['noisy_source']!r} has none); choose another teacher")
        results.append({"text": rec["released_critique"], "finish_reason": "stop"})
    return results


def apply_filters(rows: list[dict], cfg, seed: int) -> list[dict]:
    if cfg.drop_disagreements:
        rows = [r for r in rows if r.get("agrees_with_reference") is not False]
    if cfg.balance_verdicts:
        by = {v: [r for r in rows if r["teacher_verdict"] == v] for v in ("right", "wrong")}
        n = min(len(v) for v in by.values())
        rng = random.Random(seed)
        rows = [r for v in by.values() for r in rng.sample(v, n)]
    return rows


def run(cfg, paths: RunPaths) -> dict:
    target = cfg.method.target
    if target not in OUTPUT_FIELD:
        return {"skipped": f"method {cfg.method.name} trains on the dataset's responses; no teacher"}
    records = read_jsonl(paths.records)
    if cfg.method.keep == "verified":
        records = [r for r in records if is_verified(r)]
    paths.critique_dir.mkdir(parents=True, exist_ok=True)

    teacher_stats: dict = {}
    if cfg.teacher.backend == "released":
        results = _released(records)
        ledger_totals = {}
    else:
        requests = build_requests(cfg, records)
        with ResultStore(paths.critique_cache) as store, Ledger(
            paths.critique_ledger, cfg.teacher.price_prompt_per_mtok,
            cfg.teacher.price_completion_per_mtok,
        ) as ledger:
            teacher = build_teacher(cfg.teacher, {r["id"]: r for r in records}, cfg.vllm)
            teacher_stats = teacher.generate(requests, store, ledger) or {}
            results = [store.get(req.key) for req in requests]
            ledger_totals = ledger.totals()

    kept, rejects = [], []
    for rec, result in zip(records, results):
        if result is None:
            rejects.append({"id": rec["id"], "reason": "no result (attempts exhausted)"})
            continue
        reason = ("reference check undecided" if result.get("finish_reason") == "undecided"
                  else reject_reason(result, needs_verdict=target == "critique"))
        if reason:
            rejects.append({"id": rec["id"], "reason": reason, "text": result.get("text", "")})
            continue
        row = dict(rec, **{OUTPUT_FIELD[target]: result["text"]})
        if target == "critique":
            verdict = parse_verdict(result["text"])
            row["teacher_verdict"] = verdict
            row["agrees_with_reference"] = (None if rec["response_correct"] == UNKNOWN
                                            else verdict == rec["response_correct"])
        kept.append(row)

    checked = [r for r in kept if r.get("agrees_with_reference") is not None]
    agreement = (sum(r["agrees_with_reference"] for r in checked) / len(checked)) if checked else None
    kept = apply_filters(kept, cfg.teacher, cfg.seed) if target == "critique" else kept
    write_jsonl(paths.rejects, rejects)
    write_jsonl(paths.critiques, kept)
    summary = {
        "teacher": OmegaConf.to_container(cfg.teacher, resolve=True) if OmegaConf.is_config(cfg.teacher) else dict(cfg.teacher),
        "n_records": len(records), "n_kept": len(kept), "n_rejected": len(rejects),
        "reject_reasons": dict(Counter(r["reason"] for r in rejects)),
        "teacher_verdicts": dict(Counter(r.get("teacher_verdict") for r in kept)),
        "agreement_with_reference_check": agreement, "n_agreement_checked": len(checked),
        "teacher_stats": teacher_stats, "ledger": ledger_totals,
    }
    write_json(paths.critique_summary, summary)
    return {k: summary[k] for k in ("n_kept", "n_rejected", "agreement_with_reference_check")}
