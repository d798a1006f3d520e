"""A sweep table's statistics (cft.report.tables): runs that differ only in `seed` become one row
(mean ± sd over seeds, and how many), a single run's scores carry their 95 % interval, and each row
differs from its baseline row (`report.baseline`, e.g. "method=sft": the row with that value and
the same other keys) by a difference with a 95 % interval.

The interval of a difference is the paired bootstrap over problems of cft.stats, stratified by
benchmark, on the problems both rows evaluated; a row of several seeds enters with each problem's
verdicts pooled over its seeds. So it covers which problems (and samples) were drawn, not which
training seeds: the sd over seeds beside it shows that.
"""
from __future__ import annotations

import functools
import math
from collections import Counter
from pathlib import Path

from cft.paths import RunPaths
from cft.report import evidence
from cft.stats import paired_bootstrap

SEED = "seed"


def parse_baseline(spec: str) -> dict[str, str]:
    """"method=sft dataset=champ" -> {"method": "sft", "dataset": "champ"} (row labels: a group's
    `.name` may be left out or written)."""
    out = {}
    for pair in spec.split():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"report.baseline={spec!r}: expected key=value pairs such as method=sft")
        out[key[: -len(".name")] if key.endswith(".name") else key] = value
    return out


def baseline_of(runs, override: str | None = None) -> str | None:
    """The baseline a table uses: `override` (the command line), else the one the runs' configs
    name most often (report.baseline), else None."""
    if override:
        return override
    named = Counter(str(r.config["report.baseline"]) for r in runs
                    if r.config.get("report.baseline") not in (None, "None", ""))
    return named.most_common(1)[0][0] if named else None


def group_by_seed(runs, key_of) -> list[list]:
    """Runs with the same row key (every shown key but `seed`) together, in first-seen order."""
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault(key_of(run), []).append(run)
    return list(groups.values())


def _sd(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def aggregate(ok: list, benchmarks: list[str], average_of) -> tuple[dict, float | None, dict]:
    """(cells: mean over the runs, average: mean of their averages, sd per column when there are
    several runs). A benchmark some run lacks is None."""
    cells, sd = {}, {}
    for b in benchmarks:
        values = [r.results["accuracy"].get(b) for r in ok]
        cells[b] = None if not values or None in values else sum(values) / len(values)
        if cells[b] is not None and len(values) > 1:
            sd[b] = _sd(values)
    averages = [average_of(r) for r in ok]
    average = None if not averages or None in averages else sum(averages) / len(averages)
    if average is not None and len(averages) > 1:
        sd["average"] = _sd(averages)
    if len(ok) > 1:
        cells = {b: None if v is None else round(v, 2) for b, v in cells.items()}
        average = None if average is None else round(average, 2)
    return cells, average, sd


def half_widths(run, benchmarks: list[str]) -> dict[str, float]:
    """A single run's 95 % half-widths per column (results.json `uncertainty`, else measured on
    its eval rows); the average's from the shown benchmarks' (cft.stats.macro_estimate: their
    variances add). {} without per-problem rows."""
    u = (run.results or {}).get("uncertainty") or _measured(str(run.run_dir))
    out = {b: u[b]["half_width"] for b in benchmarks if isinstance(u.get(b), dict) and "half_width" in u[b]}
    if benchmarks and all(b in out for b in benchmarks):
        out["average"] = math.sqrt(sum(out[b] ** 2 for b in benchmarks)) / len(benchmarks)
    return out


@functools.lru_cache(maxsize=None)
def _measured(run_dir: str) -> dict:
    return evidence.uncertainty(RunPaths.of(run_dir))


@functools.lru_cache(maxsize=None)
def _problems(run_dir: str, benchmark: str) -> dict[int, list[float]]:
    paths = RunPaths.of(run_dir)
    if not paths.eval_samples(benchmark).exists():
        return {}
    return {i: p.outcomes for i, p in evidence.problems(paths, benchmark).items()}


def pooled(run_dirs: list[Path], benchmark: str) -> dict[int, list[float]]:
    """Each problem's verdicts over every run (seed) of a row, on the problems all of them have."""
    per_run = [_problems(str(d), benchmark) for d in run_dirs]
    if not per_run or not all(per_run):
        return {}
    ids = [i for i in per_run[0] if all(i in p for p in per_run[1:])]
    return {i: [v for p in per_run for v in p[i]] for i in ids}


def delta_interval(row_dirs: list[Path], base_dirs: list[Path], benchmarks: list[str], resamples: int = 10_000,
                   seed: int = 0) -> tuple[float, float, float] | None:
    """(Δ average in points, 95 % low, high) of a row against its baseline row on the problems
    both evaluated, or None when either lacks per-problem rows for a benchmark."""
    strata = []
    for b in benchmarks:
        base, row = pooled(base_dirs, b), pooled(row_dirs, b)
        ids = [i for i in base if i in row]
        if not ids:
            return None
        strata.append(([sum(base[i]) / len(base[i]) for i in ids], [sum(row[i]) / len(row[i]) for i in ids]))
    if not strata:
        return None
    delta = 100.0 * sum((sum(b) - sum(a)) / len(a) for a, b in strata) / len(strata)
    lo, hi = paired_bootstrap(strata, resamples, seed)
    return delta, lo, hi
