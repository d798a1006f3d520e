"""N-gram decontamination of training questions against the evaluation benchmarks.

Same rule as open-instruct's decontamination: a training question is flagged when it shares
any word n-gram (default 8) with a benchmark question. Short questions (fewer than n words)
are compared whole.
"""
from __future__ import annotations

from pathlib import Path

from cft.benchmarks import BENCHMARKS, words


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def decontamination_report(records: list[dict], benchmarks_root: str | Path, n: int = 8) -> dict:
    index: dict[tuple[str, ...], tuple[str, int]] = {}
    scanned = {}
    for name, bench in BENCHMARKS.items():
        if not bench.path(benchmarks_root).exists():
            continue
        items = bench.load(benchmarks_root)
        scanned[name] = len(items)
        for item in items:
            for gram in _ngrams(words(item["question"]), n):
                index.setdefault(gram, (name, item["idx"]))
    flagged = []
    for rec in records:
        hits = {index[g] for g in _ngrams(words(rec["question"]), n) if g in index}
        if hits:
            flagged.append({"id": rec["id"], "matches": sorted([list(h) for h in hits])[:5]})
    return {"ngram": n, "benchmarks_scanned": scanned, "n_checked": len(records), "flagged": flagged}
