"""The `critique` stage: one teacher output per record, parsed, filtered, audited.

Outputs (run_dir/critique/): cache.jsonl (raw teacher outputs, append-only, the resume
point), ledger.jsonl (tokens and dollars per attempt), critiques.jsonl (usable training
targets), rejects.jsonl (each unusable output with its reason), summary.json.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from types import SimpleNamespace

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
    paths.critique_dir.mkdir(parents=True, exist_ok=True)
    if cfg.teacher.backend == "released" and not cfg.teacher.models and not holds_all_rows(cfg.teacher):
        return _run_streaming(cfg, paths)
    records = read_jsonl(paths.records)
    if cfg.method.keep == "verified":
        records = [r for r in records if is_verified(r)]

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
    needs_verdict = target == "critique" and bool(cfg.teacher.require_verdict)
    for t in teachers:
        stats = teacher_stats.get(t.name, {}) if multi else teacher_stats
        why_failed = {f["key"]: f for f in stats.get("failures", [])}
        keys = [r.key for r in build_requests(cfg, records, t, multi)] if why_failed else []
        verdicts[t.name], plain = {}, _plain(t)
        for i, (rec, result) in enumerate(zip(records, results[t.name])):
            failure = why_failed.get(keys[i]) if keys and result is None else None
            row, reject = _decide(target, needs_verdict, plain, rec, result, failure, multi)
            if reject is not None:
                rejects.append(reject)
                continue
            if target == "critique":
                verdicts[t.name][rec["id"]] = row["teacher_verdict"]
            kept.append(row)

    checked = [r for r in kept if r.get("agrees_with_reference") is not None]
    filtered: dict = {}
    kept = apply_filters(kept, cfg.teacher, cfg.seed, filtered) if target == "critique" else kept
    write_jsonl(paths.rejects, rejects)
    write_jsonl(paths.critiques, kept)
    summary = _summary(cfg, n_records=len(records), kept=kept, rejects=rejects, filtered=filtered,
                       n_checked=len(checked), n_agree=sum(r["agrees_with_reference"] for r in checked),
                       teacher_stats=teacher_stats, ledger_totals=ledger_totals)
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
    return _finish(paths, summary, multi)


def _plain(teacher_cfg) -> SimpleNamespace:
    """A teacher config as plain attributes: read once per row at 600K rows, OmegaConf's
    attribute access costs more than the row's own work."""
    fields = OmegaConf.to_container(teacher_cfg, resolve=True) if OmegaConf.is_config(teacher_cfg) else dict(teacher_cfg)
    return SimpleNamespace(**fields)


def _decide(target: str, needs_verdict: bool, t: SimpleNamespace, rec: dict, result: dict | None,
            failure: dict | None, multi: bool) -> tuple[dict | None, dict | None]:
    """(the critique row, None), or (None, the reject) for one record's output from teacher `t`;
    `needs_verdict`: a critique without a verdict line is rejected (teacher.require_verdict)."""
    who = {"teacher": t.name} if multi else {}
    if result is None:
        reason = (f"no result after {failure['attempts']} attempt(s): {failure['reason']}"
                  if failure else "no result (attempts exhausted)")
        return None, {"id": rec["id"], **who, "reason": reason}
    reason = ("reference check undecided" if result.get("finish_reason") == "undecided"
              else reject_reason(result, needs_verdict=needs_verdict))
    if reason:
        return None, {"id": rec["id"], **who, "reason": reason, "text": result.get("text", "")}
    row = dict(rec, **{OUTPUT_FIELD[target]: result["text"]}, teacher=t.name,
               teacher_model=result.get("model") or t.model)
    if target == "critique":
        verdict = parse_verdict(result["text"])
        row["teacher_verdict"] = verdict
        row["agrees_with_reference"] = (None if rec["response_correct"] == UNKNOWN
                                        else verdict == rec["response_correct"])
    return row, None


# teacher.* filters that choose among all the parsed critiques at once (the others decide row by row)
LIST_FILTERS = ("balance_verdicts", "max_critiques")


def holds_all_rows(teacher_cfg) -> bool:
    """Whether a filter needs every parsed critique at hand (LIST_FILTERS)."""
    return any(getattr(teacher_cfg, k, None) not in (None, False) for k in LIST_FILTERS)


def _run_streaming(cfg, paths: RunPaths) -> dict:
    """teacher=released with no list-wide filter (the paper's 600K run): records stream from
    records.jsonl to critiques.jsonl and rejects.jsonl, each decided as it comes (apply_filters
    on one row at a time), so memory does not grow with the rows (issue #24). The same files
    and summary as the in-memory path (tests/test_critique_stage.py compares them)."""
    from cft.io import atomic_open, iter_jsonl

    target, t, seed = cfg.method.target, _plain(cfg.teacher), cfg.seed
    needs_verdict, verified_only = target == "critique" and bool(t.require_verdict), cfg.method.keep == "verified"
    n_records = n_checked = n_agree = 0
    kept, rejects = _Tally(), _Tally()
    filtered: dict = {}
    with atomic_open(paths.rejects) as rejects_file, atomic_open(paths.critiques) as kept_file:
        for rec in iter_jsonl(paths.records):
            if verified_only and not is_verified(rec):
                continue
            n_records += 1
            (result,) = _released([rec])
            row, reject = _decide(target, needs_verdict, t, rec, result, None, False)
            if reject is not None:
                rejects.add(reject, rejects_file)
                continue
            if row.get("agrees_with_reference") is not None:
                n_checked += 1
                n_agree += row["agrees_with_reference"]
            if target == "critique":
                dropped: dict = {}
                rows = apply_filters([row], t, seed, dropped)
                for k, v in dropped.items():
                    filtered[k] = filtered.get(k, 0) + v
            else:
                rows = [row]
            for r in rows:
                kept.add(r, kept_file)
    summary = _summary(cfg, n_records=n_records, kept=kept, rejects=rejects,
                       filtered=_in_filter_order(filtered),
                       n_checked=n_checked, n_agree=n_agree, teacher_stats={}, ledger_totals={})
    return _finish(paths, summary, False)


def _in_filter_order(counts: dict) -> dict:
    """Per-row drop counts summed, keyed in the order apply_filters writes them over a list
    (keep, drop_disagreements, balance_verdicts, max_critiques; any other key after, as met)."""
    known = ("keep:undecided", "keep:verdict_mismatch", "drop_disagreements", "balance_verdicts", "max_critiques")
    return {k: counts[k] for k in sorted(counts, key=lambda k: known.index(k) if k in known else len(known))}


class _Tally:
    """Rows written as they come, keeping only what the summary counts of them."""

    def __init__(self):
        self.n, self.reasons, self.verdicts, self.n_without_verdict = 0, Counter(), Counter(), 0

    def add(self, row: dict, file) -> None:
        file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.n += 1
        if "reason" in row and "question" not in row:  # a reject
            self.reasons[_reason_kind(row["reason"])] += 1
        self.verdicts[row.get("teacher_verdict")] += 1
        self.n_without_verdict += row.get("teacher_verdict") is None


def _summary(cfg, *, n_records: int, kept, rejects, filtered: dict, n_checked: int, n_agree: int,
             teacher_stats: dict, ledger_totals: dict) -> dict:
    """critique/summary.json's common fields, from the row lists or their tallies."""
    def tally(rows) -> _Tally:
        if isinstance(rows, _Tally):
            return rows
        out = _Tally()
        for r in rows:
            out.add(r, _NoFile)
        return out

    kept, rejects = tally(kept), tally(rejects)
    return {
        "teacher": OmegaConf.to_container(cfg.teacher, resolve=True) if OmegaConf.is_config(cfg.teacher) else dict(cfg.teacher),
        "n_records": n_records, "n_kept": kept.n, "n_rejected": rejects.n,
        # Parsed critiques that the teacher.* filters removed (not rejects: their text was fine).
        "n_filtered": filtered,
        "reject_reasons": dict(rejects.reasons),
        "teacher_verdicts": dict(kept.verdicts),
        "n_kept_without_verdict": kept.n_without_verdict if cfg.method.target == "critique" else 0,
        "agreement_with_reference_check": n_agree / n_checked if n_checked else None,
        "n_agreement_checked": n_checked,
        "teacher_stats": teacher_stats, "ledger": ledger_totals,
    }


class _NoFile:
    @staticmethod
    def write(_: str) -> None:
        pass


def _finish(paths: RunPaths, summary: dict, multi: bool) -> dict:
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
