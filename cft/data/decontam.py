"""N-gram decontamination of training questions against the evaluation benchmarks.

Same rule as open-instruct's decontamination: a training question is flagged when it shares
any word n-gram (default 8) with a benchmark question. Short questions (fewer than n words)
are compared whole.
"""
from __future__ import annotations

import json
import tempfile
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


class FlaggedSpool:
    """The flagged records, spooled to a temp file beside `path` as they are found (a dataset
    built from benchmark problems flags every row), then written as the report: the text
    `cft.io.write_json(path, report)` writes (json.dump with indent=2), one item at a time."""

    def __init__(self, path: Path):
        self.path, self.n = Path(path), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8", dir=self.path.parent)

    def add(self, record_id: str, matches: list[list]) -> None:
        """Spool the item as the report's text: json.dumps(indent=2), indented two levels."""
        item = json.dumps({"id": record_id, "matches": matches}, indent=2, ensure_ascii=False, default=str)
        self.file.write((",\n" if self.n else "") + "\n".join("    " + line for line in item.split("\n")))
        self.n += 1

    def write_report(self, ngrams: BenchmarkNgrams, n_checked: int) -> None:
        import shutil

        from cft.io import atomic_open

        head = json.dumps(ngrams.report(n_checked, []), indent=2, ensure_ascii=False, default=str)
        assert head.endswith('"flagged": []\n}')
        self.file.seek(0)
        with atomic_open(self.path) as out:
            if not self.n:
                out.write(head + "\n")
                return
            out.write(head[: -len("]\n}")] + "\n")
            shutil.copyfileobj(self.file, out)
            out.write("\n  ]\n}\n")

    def close(self) -> None:
        self.file.close()


def decontamination_report(records: Iterable[dict], benchmarks_root: str | Path, n: int = 8) -> dict:
    ngrams = BenchmarkNgrams(benchmarks_root, n)
    flagged, n_checked = [], 0
    for rec in records:
        n_checked += 1
        if hits := ngrams.matches(rec["question"]):
            flagged.append({"id": rec["id"], "matches": hits})
    return ngrams.report(n_checked, flagged)
