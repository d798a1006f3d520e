"""N-gram decontamination of training questions against the evaluation benchmarks.

Same rule as open-instruct's decontamination: a training question is flagged when it shares
any word n-gram (default 8) with a benchmark question. Short questions (fewer than n words)
are compared whole.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from cft.benchmarks import BENCHMARKS, words


def _ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


class BenchmarkNgrams:
    """The n-grams of every shipped benchmark's questions, built once; `matches(question)` checks
    one training question, so the data stage can check records as they stream by."""

    def __init__(self, benchmarks_root: str | Path, n: int = 8):
        self.n, self.index, self.scanned = n, {}, {}
        for name, bench in BENCHMARKS.items():
            if not bench.path(benchmarks_root).exists():
                continue
            items = bench.load(benchmarks_root)
            self.scanned[name] = len(items)
            for item in items:
                for gram in _ngrams(words(item["question"]), n):
                    self.index.setdefault(gram, (name, item["idx"]))

    def matches(self, question: str) -> list[list]:
        """Up to 5 (benchmark, item index) pairs sharing an n-gram with `question`, sorted."""
        hits = {self.index[g] for g in _ngrams(words(question), self.n) if g in self.index}
        return sorted([list(h) for h in hits])[:5]

    def report(self, n_checked: int, flagged: list[dict]) -> dict:
        return {"ngram": self.n, "benchmarks_scanned": self.scanned, "n_checked": n_checked, "flagged": flagged}


def decontamination_report(records: Iterable[dict], benchmarks_root: str | Path, n: int = 8) -> dict:
    ngrams = BenchmarkNgrams(benchmarks_root, n)
    flagged, n_checked = [], 0
    for rec in records:
        n_checked += 1
        if hits := ngrams.matches(rec["question"]):
            flagged.append({"id": rec["id"], "matches": hits})
    return ngrams.report(n_checked, flagged)
