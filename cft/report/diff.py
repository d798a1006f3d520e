"""`python -m cft.report diff RUN_A RUN_B [--show N] [--json]`: why is my number not yours?

Per benchmark, the problems whose verdicts differ between the two runs, each labelled with the
first place along the evaluation where the runs diverge:

    prompt      the prompt text differs (template, question)
    generation  same prompt, different completion (weights, engine, dtype, sampling, versions)
    extraction  same completion, different extracted answer (extraction rules)
    reference   same answer, different reference (the benchmark file)
    timeout     same answer and reference, and one run's grader timed out
    grading     same answer and reference, different verdict (checker, its libraries)

With several samples per problem, the first sample whose verdict differs is the one labelled.
Then the counts per label, the first few problems side by side, the settings (config.yaml) and
the provenance fields (provenance.json) that differ.
"""
from __future__ import annotations

import json
import textwrap
from collections import Counter
from itertools import zip_longest

from cft.paths import RunPaths
from cft.report.compare import settings_diff, settings_text
from cft.report.evidence import Problem, benchmarks, problems
from cft.config import flatten as _flatten  # the sweep table's dotted keys, one way

LABELS = ("prompt", "generation", "extraction", "reference", "timeout", "grading")


def divergence(pa: Problem, pb: Problem) -> tuple[str, int] | None:
    """(label, sample index) of the first place two runs' evaluations of a problem diverge, or
    None when their verdicts agree sample for sample (with different numbers of samples: when
    the problem's scores agree)."""
    va, vb = pa.outcomes, pb.outcomes
    j = next((k for k, (x, y) in enumerate(zip(va, vb)) if x != y), None)
    if len(va) != len(vb):
        if pa.score == pb.score:
            return None
        better = pa if pa.score > pb.score else pb
        j = next(k for k, v in enumerate(better.outcomes) if v)  # show a sample of the better run that is right
    if j is None:
        return None
    sa, sb = _sample(pa, j), _sample(pb, j)
    if pa.row.get("prompt") != pb.row.get("prompt"):
        return "prompt", j
    if sa.get("completion") != sb.get("completion"):
        return "generation", j
    if sa.get("prediction") != sb.get("prediction"):
        return "extraction", j
    if pa.row.get("reference") != pb.row.get("reference"):
        return "reference", j
    if "timeout" in (str(sa.get("verdict")), str(sb.get("verdict"))):
        return "timeout", j
    return "grading", j


def _sample(problem: Problem, j: int) -> dict:
    """Sample j, or the last one of a run with fewer samples."""
    return problem.samples[min(j, len(problem.samples) - 1)]




def provenance_diff(a: RunPaths, b: RunPaths) -> dict:
    """{"missing": [...runs without provenance.json], "differ": [{key, a, b}]}; each run's own
    directory is written <run> so that paths inside the runs compare equal."""
    records = []
    for paths in (a, b):
        if not paths.provenance.exists():
            records.append(None)
            continue
        text = paths.provenance.read_text().replace(json.dumps(str(paths.root))[1:-1], "<run>")
        records.append(_flatten(json.loads(text)))
    missing = [name for name, r in zip("AB", records) if r is None]
    if missing:
        return {"missing": missing, "differ": []}
    fa, fb = records
    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    return {"missing": [], "differ": [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in keys]}


def _at(text: str | None, other: str | None, width: int = 240) -> str:
    """`text` from a little before its first difference with `other`."""
    text, other = str(text or ""), str(other or "")
    k = next((i for i, (x, y) in enumerate(zip(text, other)) if x != y), min(len(text), len(other)))
    start = max(0, k - 40)
    return ("…" if start else "") + text[start:start + width] + ("…" if start + width < len(text) else "")


def _side(problem: Problem, other: Problem, label: str, j: int) -> dict:
    s, o = _sample(problem, j), _sample(other, j)
    shown = {"verdict": s.get("verdict"), "answer": s.get("prediction"), "rule": s.get("extraction_rule"),
             "reference": problem.row.get("reference")}
    if label == "prompt":
        shown["prompt"] = _at(problem.row.get("prompt"), other.row.get("prompt"))
    shown["completion"] = _at(s.get("completion"), o.get("completion")) if label in ("prompt", "generation") \
        else _at(s.get("completion"), "", 160)
    return shown


def diff_benchmark(pa: dict[int, Problem], pb: dict[int, Problem], show: int) -> dict:
    ids = [i for i in pa if i in pb]
    found = [(i, divergence(pa[i], pb[i])) for i in ids]
    found = [(i, d) for i, d in found if d is not None]
    counts = Counter(label for _, (label, _) in found)
    return {"n_items": len(ids), "differ": len(found),
            "a_right_b_wrong": sum(pa[i].score > pb[i].score for i, _ in found),
            "b_right_a_wrong": sum(pb[i].score > pa[i].score for i, _ in found),
            "by_label": {label: counts[label] for label in LABELS if counts[label]},
            "problems": [{"idx": i, "label": label, "sample": j, "a": _side(pa[i], pb[i], label, j),
                          "b": _side(pb[i], pa[i], label, j)} for i, (label, j) in found[:show]],
            "only_a": len([i for i in pa if i not in pb]), "only_b": len([i for i in pb if i not in pa])}


def diff(a: RunPaths, b: RunPaths, show: int = 3) -> dict:
    names = [n for n in benchmarks(a) if n in benchmarks(b)]
    return {"run_a": str(a.root), "run_b": str(b.root),
            "settings": settings_diff(a, b),
            "benchmarks": {n: diff_benchmark(problems(a, n), problems(b, n), show) for n in names},
            "provenance": provenance_diff(a, b)}


def _columns(left: str, right: str, width: int) -> list[str]:
    wrap = lambda s: textwrap.wrap(s.replace("\n", "⏎"), width, drop_whitespace=False) or [""]  # noqa: E731
    return [f"  {x:<{width}} │ {y}" for x, y in zip_longest(wrap(left), wrap(right), fillvalue="")]


def _short(value, limit: int = 70) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_text(result: dict, width: int = 58) -> str:
    lines = [f"A: {result['run_a']}", f"B: {result['run_b']}", *settings_text(result["settings"])]
    for name, r in result["benchmarks"].items():
        labels = ", ".join(f"{k} {v}" for k, v in r["by_label"].items()) or "none"
        lines += ["", f"== {name}: {r['differ']} of {r['n_items']} problems differ (A right, B wrong: "
                      f"{r['a_right_b_wrong']}; B right, A wrong: {r['b_right_a_wrong']}); first divergence: {labels}"]
        if r["only_a"] or r["only_b"]:
            lines.append(f"   problems in one run only: A {r['only_a']}, B {r['only_b']}")
        for p in r["problems"]:
            lines.append(f"-- idx {p['idx']}: {p['label']}" + (f" (sample {p['sample']})" if p["sample"] else ""))
            lines += _columns("A", "B", width)
            for key in ("verdict", "answer", "rule", "reference", "prompt", "completion"):
                if key in p["a"]:
                    lines += _columns(f"{key}: {p['a'][key]}", f"{key}: {p['b'][key]}", width)
    prov = result["provenance"]
    lines.append("")
    if prov["missing"]:
        lines.append(f"provenance: run {' and '.join(prov['missing'])} has no provenance.json")
    else:
        lines.append(f"provenance fields that differ: {len(prov['differ'])}")
        lines += [f"  {d['key']}: {_short(d['a'])} -> {_short(d['b'])}" for d in prov["differ"]]
    return "\n".join(lines) + "\n"
