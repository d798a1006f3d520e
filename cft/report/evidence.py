"""One run's per-problem evidence, read from its run directory through RunPaths: each benchmark's
problems with their graded samples (eval/<benchmark>.jsonl), and the scores' uncertainty.

Both row formats are read: one sample per problem (the row's own `correct`, `verdict`,
`prediction`, `completion`), and eval.n samples per problem (`samples`: each with the same
fields; sample 0's are also the row's own).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cft.benchmarks import PAPER_BENCHMARKS
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.stats import Estimate, macro_estimate, score_estimate

SAMPLE_FIELDS = ("completion", "prediction", "extraction_rule", "verdict", "correct", "finish_reason")


@dataclass
class Problem:
    idx: int
    row: dict  # the eval row: question, prompt, reference, sample 0's fields
    samples: list[dict]  # every graded sample: completion, prediction, extraction_rule, verdict, correct

    @property
    def outcomes(self) -> list[float]:
        return [1.0 if _correct(s) else 0.0 for s in self.samples]

    @property
    def score(self) -> float:
        """The share of this problem's samples that are right."""
        outcomes = self.outcomes
        return sum(outcomes) / len(outcomes)


def _correct(sample: dict) -> bool:
    if "correct" in sample:
        return bool(sample["correct"])
    return str(sample.get("verdict")) == "equal"


def _samples(row: dict) -> list[dict]:
    samples = row.get("samples")
    if isinstance(samples, list) and samples:
        return samples
    return [{k: row[k] for k in SAMPLE_FIELDS if k in row}]


def benchmarks(paths: RunPaths) -> list[str]:
    """The benchmarks a run has per-problem rows for: those of eval/results.json (the paper's
    order first), else every eval/<name>.jsonl."""
    names: list[str] = []
    if paths.eval_results.exists():
        try:
            names = list(read_json(paths.eval_results).get("benchmarks", {}))
        except (OSError, ValueError, AttributeError):
            names = []
    if not names and paths.eval_dir.is_dir():
        names = sorted(p.stem for p in paths.eval_dir.glob("*.jsonl") if not p.name.endswith(".progress.jsonl"))
    names = [b for b in names if paths.eval_samples(b).exists()]
    return [b for b in PAPER_BENCHMARKS if b in names] + [b for b in names if b not in PAPER_BENCHMARKS]


def problems(paths: RunPaths, benchmark: str) -> dict[int, Problem]:
    """{idx: Problem} of one benchmark, in file order."""
    out = {}
    for row in read_jsonl(paths.eval_samples(benchmark)):
        out[int(row["idx"])] = Problem(int(row["idx"]), row, _samples(row))
    return out


def estimates(paths: RunPaths) -> dict[str, Estimate]:
    """{benchmark: Estimate, ..., "macro": Estimate} from the run's per-problem rows; {} when it
    has none (a run from before per-problem rows, or one without eval)."""
    out = {}
    for b in benchmarks(paths):
        try:
            rows = problems(paths, b)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            continue  # a damaged file: the score stays without an interval rather than fail a table
        if rows:
            out[b] = score_estimate([p.outcomes for p in rows.values()])
    if out:
        out["macro"] = macro_estimate(list(out.values()))
    return out


def uncertainty(paths: RunPaths) -> dict[str, dict]:
    """What results.json records under `uncertainty`: each benchmark's and the macro average's
    SE, 95 % interval, half-width and points per problem (rounded for reading)."""
    return {b: {k: _round(v) for k, v in e.to_dict().items()} for b, e in estimates(paths).items()}


def _round(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
    return value


def pm(score: float, half_width: float | None, digits: int = 1) -> str:
    """`score ± half-width` as the tables show it."""
    if half_width is None or half_width != half_width:  # nan: one problem, no spread to measure
        return f"{score:.{digits}f}"
    return f"{score:.{digits}f} ± {half_width:.{digits}f}"


def run_dir_of(path: str | Path) -> RunPaths:
    """RunPaths of a run directory given on the command line; an error naming what is missing."""
    paths = RunPaths.of(path)
    if not paths.root.is_dir():
        raise FileNotFoundError(f"{paths.root}: no such run directory")
    if not paths.eval_dir.is_dir():
        raise FileNotFoundError(f"{paths.root}: no eval/ directory (run the eval stage first)")
    return paths
