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
from cft.store import Ledger, ResultStore
from cft.critique.teachers import build_teacher
from cft.critique.verdict import parse_verdict, reject_reason
from cft.records import UNKNOWN, is_verified
from cft.io import read_jsonl, write_json, write_jsonl
from cft.paths import RunPaths

OUTPUT_FIELD = {"critique": "critique", "teacher_solution": "teacher_solution"}


def _sampling(cfg) -> dict:
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}


def teachers_of(teacher_cfg) -> list:
    """The run's teachers: `teacher` itself, or one per `teacher.models` entry (the entry's set
    fields over the parent's)."""
    if not teacher_cfg.models:
        return [teacher_cfg]
    base = OmegaConf.to_container(teacher_cfg, resolve=True)
    base.pop("models")
    out = []
    for entry in teacher_cfg.models:
        over = {k: v for k, v in OmegaConf.to_container(entry, resolve=True).items() if v is not None}
        out.append(OmegaConf.create({**base, **over, "models": []}))
    return out


def build_requests(cfg, records: list[dict], teacher=None, multi: bool = False) -> list[Request]:
    """One request per record for `teacher` (default: cfg.teacher). In a multi-teacher run the
    teacher's name is part of the key, so teachers sharing a model still get their own critique."""
    teacher = teacher if teacher is not None else cfg.teacher
    target = cfg.method.target
    prompt = load_prompt(teacher.prompt if target == "critique" else teacher.solution_prompt)
    requests = []
    for rec in records:
        response = rec["noisy_response"] if target == "critique" else None
        key = request_key(model=teacher.model or teacher.name, prompt_name=prompt.name,
                          prompt_version=prompt.version, sampling=_sampling(teacher),
                          question=rec["question"], response=response,
                          teacher=teacher.name if multi else None)
        requests.append(Request(key=key, messages=prompt.messages(rec["question"], response),
                                meta={"id": rec["id"], "target": target, "teacher": teacher.name}))
    return requests


def _ledger(paths: RunPaths, t) -> Ledger:
    discount = float(t.batch_discount) if t.backend == "openai" and t.mode == "batch" else 1.0
    return Ledger(paths.critique_ledger, t.price_prompt_per_mtok, t.price_completion_per_mtok,
                  discount=discount, teacher=t.name)


def _generate(cfg, paths: RunPaths, records: list[dict], teachers: list, multi: bool):
    """Run every teacher over the records; return per-teacher results, stats, ledger totals."""
    by_id = {r["id"]: r for r in records}
    jobs = [(t, build_requests(cfg, records, t, multi)) for t in teachers]
    stats: dict = {}
    with ResultStore(paths.critique_cache) as store:
        # Submit every batch teacher's batches first, so they all run while we wait on any.
        submitted = {}
        for t, reqs in jobs:
            if t.backend == "openai" and t.mode == "batch" and len(jobs) > 1:
                with _ledger(paths, t) as ledger:
                    submitted[t.name] = build_teacher(t, by_id, paths.critique_batches, cfg.vllm).generate(
                        reqs, store, ledger, wait=False)["batches_created"]
        for t, reqs in jobs:
            with _ledger(paths, t) as ledger:
                stats[t.name] = build_teacher(t, by_id, paths.critique_batches, cfg.vllm).generate(
                    reqs, store, ledger) or {}
            if t.name in submitted:
                stats[t.name]["batches_created"] += submitted[t.name]
        results = {t.name: [store.get(r.key) for r in reqs] for t, reqs in jobs}
    with Ledger(paths.critique_ledger) as ledger:
        totals = ledger.totals()
        if multi:
            totals["per_teacher"] = {t.name: ledger.totals(teacher=t.name) for t in teachers}
    return results, stats, totals


def agreement_table(verdicts: dict[str, dict[str, str]]) -> dict:
    """Pairwise verdict agreement between teachers, over the records both gave a verdict on."""
    names = list(verdicts)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = [k for k in verdicts[a] if k in verdicts[b]]
            agree = sum(verdicts[a][k] == verdicts[b][k] for k in common)
            pairs.append({"a": a, "b": b, "n": len(common),
                          "agree": round(agree / len(common), 4) if common else None})
    every = [k for k in verdicts[names[0]] if all(k in verdicts[n] for n in names)] if names else []
    unanimous = sum(len({verdicts[n][k] for n in names}) == 1 for k in every)
    return {"pairs": pairs, "n_all": len(every),
            "unanimous": round(unanimous / len(every), 4) if every else None}


def _released(records: list[dict]) -> list[dict]:
    results = []
    for rec in records:
        if rec.get("released_critique") is None:
            raise ValueError(f"teacher=released: record {rec['id']} ships no critique "
                             f"(dataset {rec['noisy_source']!r} has none); choose another teacher")
        results.append({"text": rec["released_critique"], "finish_reason": "stop"})
    return results


def apply_filters(rows: list[dict], cfg, seed: int, dropped: dict | None = None) -> list[dict]:
    """The teacher config's filters over parsed critiques, in order: keep, drop_disagreements,
    balance_verdicts, max_critiques. `dropped` (if given) receives how many each one removed."""
    dropped = {} if dropped is None else dropped

    def drop(name: str, kept: list[dict], before: int) -> list[dict]:
        if before - len(kept):
            dropped[name] = before - len(kept)
        return kept

    if getattr(cfg, "keep", "all") == "verdict_matches_reference":
        undecided = sum(r.get("agrees_with_reference") is None for r in rows)
        if undecided:
            dropped["keep:undecided"] = undecided
        rows = drop("keep:verdict_mismatch", [r for r in rows if r.get("agrees_with_reference") is True],
                    len(rows) - undecided)
    if cfg.drop_disagreements:
        rows = drop("drop_disagreements", [r for r in rows if r.get("agrees_with_reference") is not False], len(rows))
    if cfg.balance_verdicts:
        by = {v: [r for r in rows if r["teacher_verdict"] == v] for v in ("right", "wrong")}
        n = min(len(v) for v in by.values())
        rng = random.Random(seed)
        rows = drop("balance_verdicts", [r for v in by.values() for r in rng.sample(v, n)], len(rows))
    if getattr(cfg, "max_critiques", None) is not None and len(rows) > cfg.max_critiques:
        rows = drop("max_critiques", trim_length_extremes(rows, cfg.max_critiques), len(rows))
    return rows


def example_length(row: dict) -> int:
    """Characters of the training example a critique row becomes (problem, response, critique)."""
    return sum(len(row.get(k) or "") for k in ("question", "noisy_response", "critique"))


def trim_length_extremes(rows: list[dict], cap: int) -> list[dict]:
    """`cap` rows, reached by dropping the longest and the shortest examples in turn (the longest
    first), the rest kept in their order: One-Shot CFT's "subsample to 600 critiques per seed by
    removing the longest and shortest samples" (arXiv 2506.03295, A.3). Length is counted in
    characters, not in a tokenizer's tokens, so the critique stage needs no model; ties go by id
    and teacher so the choice is deterministic."""
    order = sorted(range(len(rows)), key=lambda i: (example_length(rows[i]), rows[i]["id"], rows[i].get("teacher", "")))
    excess = len(rows) - cap
    n_long, n_short = (excess + 1) // 2, excess // 2
    keep = set(order[n_short: len(order) - n_long])
    return [r for i, r in enumerate(rows) if i in keep]


def run(cfg, paths: RunPaths) -> dict:
    target = cfg.method.target
    if target not in OUTPUT_FIELD:
        return {"skipped": f"method {cfg.method.name} trains on the dataset's responses; no teacher"}
    records = read_jsonl(paths.records)
    if cfg.method.keep == "verified":
        records = [r for r in records if is_verified(r)]
    paths.critique_dir.mkdir(parents=True, exist_ok=True)

    teachers = teachers_of(cfg.teacher)
    multi = bool(cfg.teacher.models)
    teacher_stats: dict = {}
    if cfg.teacher.backend == "released" and not multi:
        results = {cfg.teacher.name: _released(records)}
        ledger_totals = {}
    else:
        results, teacher_stats, ledger_totals = _generate(cfg, paths, records, teachers, multi)
        if not multi:
            teacher_stats = teacher_stats[cfg.teacher.name]

    kept, rejects = [], []
    verdicts: dict[str, dict[str, str]] = {}
    for t in teachers:
        stats = teacher_stats.get(t.name, {}) if multi else teacher_stats
        why_failed = {f["key"]: f for f in stats.get("failures", [])}
        keys = [r.key for r in build_requests(cfg, records, t, multi)] if why_failed else []
        verdicts[t.name] = {}
        for i, (rec, result) in enumerate(zip(records, results[t.name])):
            who = {"teacher": t.name} if multi else {}
            if result is None:
                failure = why_failed.get(keys[i]) if keys else None
                reason = (f"no result after {failure['attempts']} attempt(s): {failure['reason']}"
                          if failure else "no result (attempts exhausted)")
                rejects.append({"id": rec["id"], **who, "reason": reason})
                continue
            reason = ("reference check undecided" if result.get("finish_reason") == "undecided"
                      else reject_reason(result, needs_verdict=target == "critique" and cfg.teacher.require_verdict))
            if reason:
                rejects.append({"id": rec["id"], **who, "reason": reason, "text": result.get("text", "")})
                continue
            row = dict(rec, **{OUTPUT_FIELD[target]: result["text"]}, teacher=t.name,
                       teacher_model=result.get("model") or t.model)
            if target == "critique":
                verdict = parse_verdict(result["text"])
                row["teacher_verdict"] = verdict
                row["agrees_with_reference"] = (None if rec["response_correct"] == UNKNOWN
                                                else verdict == rec["response_correct"])
                verdicts[t.name][rec["id"]] = verdict
            kept.append(row)

    checked = [r for r in kept if r.get("agrees_with_reference") is not None]
    agreement = (sum(r["agrees_with_reference"] for r in checked) / len(checked)) if checked else None
    filtered: dict = {}
    kept = apply_filters(kept, cfg.teacher, cfg.seed, filtered) if target == "critique" else kept
    write_jsonl(paths.rejects, rejects)
    write_jsonl(paths.critiques, kept)
    summary = {
        "teacher": OmegaConf.to_container(cfg.teacher, resolve=True) if OmegaConf.is_config(cfg.teacher) else dict(cfg.teacher),
        "n_records": len(records), "n_kept": len(kept), "n_rejected": len(rejects),
        # Parsed critiques that the teacher.* filters removed (not rejects: their text was fine).
        "n_filtered": filtered,
        "reject_reasons": dict(Counter(_reason_kind(r["reason"]) for r in rejects)),
        "teacher_verdicts": dict(Counter(r.get("teacher_verdict") for r in kept)),
        "n_kept_without_verdict": sum(target == "critique" and r.get("teacher_verdict") is None for r in kept),
        "agreement_with_reference_check": agreement, "n_agreement_checked": len(checked),
        "teacher_stats": teacher_stats, "ledger": ledger_totals,
    }
    if ledger_totals:
        summary["cost_usd"] = {"paid": ledger_totals["cost_usd"],
                               "at_sync_price": ledger_totals["sync_cost_usd"],
                               "saved": round(ledger_totals["sync_cost_usd"] - ledger_totals["cost_usd"], 6)}
    if multi:
        summary["teachers"] = [t.name for t in teachers]
        summary["teacher_agreement"] = agreement_table(verdicts) if target == "critique" else None
        summary["per_teacher"] = {t.name: {
            "n_kept": sum(r["teacher"] == t.name for r in kept),
            "n_rejected": sum(r.get("teacher") == t.name for r in rejects),
            "verdicts": dict(Counter(v for v in verdicts[t.name].values())),
        } for t in teachers}
    write_json(paths.critique_summary, summary)
    out = {k: summary[k] for k in ("n_kept", "n_rejected", "agreement_with_reference_check")}
    if "cost_usd" in summary:
        out["cost_usd"] = summary["cost_usd"]
    if multi and summary["teacher_agreement"]:
        out["teacher_agreement"] = summary["teacher_agreement"]["pairs"]
    return out


def _reason_kind(reason: str) -> str:
    """Reject reasons grouped for the summary (a failure's detail stays in rejects.jsonl)."""
    return reason.split(":", 1)[0] if reason.startswith("no result after") else reason
