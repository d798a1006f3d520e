"""`python -m cft.report compare RUN_A RUN_B [--json]`: is B better than A, by how much, and can
these benchmarks tell?

Per benchmark, on the problems both runs evaluated: the difference B - A in points, its 95 %
interval from a seeded paired bootstrap over problems, a p-value (exact McNemar with one sample
per problem, the paired t-test on per-problem means with several; Wilcoxon's beside it), and the
problems that flip each way (`a_only`: A scores higher on it, `b_only`: B does). The macro
average's interval resamples each benchmark's problems (a stratified bootstrap) and its p-value
is the normal test on the sum of the benchmarks' variances. Warnings say when the runs did not
see the same problems or prompts, used other sampling, or when a benchmark is too small for the
difference shown. The statistics are cft.stats; the runs are read through RunPaths.
"""
from __future__ import annotations

import math

from cft.io import read_json
from cft.paths import RunPaths
from cft.report.evidence import Problem, benchmarks, problems
from cft.report.tables import IGNORED, _read_config
from cft.stats import (Z95, mcnemar_exact, normal_p, paired_bootstrap, paired_tests, problem_means,
                       problems_needed)


def settings_diff(a: RunPaths, b: RunPaths) -> dict:
    """The config keys (paths, names and tracking aside) whose values differ, as {key, a, b}, and
    those only one run's config has (`only_a`, `only_b`: made by another version of the code)."""
    fa = _read_config(a.resolved_config)[0] if a.resolved_config.exists() else {}
    fb = _read_config(b.resolved_config)[0] if b.resolved_config.exists() else {}
    keys = sorted(k for k in set(fa) & set(fb) if not k.startswith(IGNORED) and str(fa[k]) != str(fb[k]))
    return {"differ": [{"key": k, "a": fa[k], "b": fb[k]} for k in keys],
            "only_a": sorted(k for k in set(fa) - set(fb) if not k.startswith(IGNORED)),
            "only_b": sorted(k for k in set(fb) - set(fa) if not k.startswith(IGNORED))}


def settings_text(settings: dict) -> list[str]:
    differ = settings["differ"]
    lines = ["settings that differ (A -> B): " + ("; ".join(f"{d['key']}: {d['a']} -> {d['b']}" for d in differ)
                                                  if differ else "none")]
    for side in ("a", "b"):
        if settings[f"only_{side}"]:
            lines.append(f"config keys only run {side.upper()} has (another version of the code): "
                         + ", ".join(settings[f"only_{side}"]))
    return lines


def _sampling(paths: RunPaths) -> dict:
    """How a run sampled (eval/results.json `sampling`; greedy for a run from before it)."""
    try:
        return read_json(paths.eval_results).get("sampling") or {"n": 1, "temperature": 0.0}
    except (OSError, ValueError):
        return {}


def compare_benchmark(name: str, pa: dict[int, Problem], pb: dict[int, Problem], resamples: int,
                      seed: int) -> dict:
    """The comparison of one benchmark's common problems (see the module docstring)."""
    ids = [i for i in pa if i in pb]
    warnings = []
    if len(ids) != len(pa) or len(ids) != len(pb):
        warnings.append(f"{name}: the runs did not see the same problems (A {len(pa)}, B {len(pb)}); "
                        f"compared on the {len(ids)} both have")
    if not ids:
        return {"n_items": 0, "delta": None, "ci95": None, "p_value": None, "a_only": 0, "b_only": 0,
                "warnings": warnings}
    for field, what in (("prompt", "prompts"), ("reference", "reference answers")):
        differ = [i for i in ids if pa[i].row.get(field) != pb[i].row.get(field)]
        if differ:
            warnings.append(f"{name}: the runs did not see the same {what} on {len(differ)} of {len(ids)} problems "
                            f"(first: idx {differ[0]}): the difference is not the models' alone")
    a = problem_means([pa[i].outcomes for i in ids])
    b = problem_means([pb[i].outcomes for i in ids])
    n_a, n_b = max(len(pa[i].samples) for i in ids), max(len(pb[i].samples) for i in ids)
    a_only = sum(x > y for x, y in zip(a, b))
    b_only = sum(y > x for x, y in zip(a, b))
    delta = 100.0 * (sum(b) - sum(a)) / len(ids)
    lo, hi = paired_bootstrap([(a, b)], resamples, seed)
    out = {"n_items": len(ids), "n_a": len(pa), "n_b": len(pb), "samples_a": n_a, "samples_b": n_b,
           "score_a": 100.0 * sum(a) / len(ids), "score_b": 100.0 * sum(b) / len(ids),
           "delta": delta, "ci95": [lo, hi], "a_only": a_only, "b_only": b_only,
           "problem_points": 100.0 / len(ids)}
    if n_a == n_b == 1:
        out.update(p_value=mcnemar_exact(a_only, b_only), test="exact McNemar",
                   both_right=sum(x == y == 1 for x, y in zip(a, b)), both_wrong=sum(x == y == 0 for x, y in zip(a, b)))
    else:
        tests = paired_tests(a, b)
        out.update(p_value=tests["t_test"], test="paired t-test on per-problem means", wilcoxon_p=tests["wilcoxon"])
    out["significant"] = lo > 0 or hi < 0
    if delta and not out["significant"]:
        needed = problems_needed([y - x for x, y in zip(a, b)], delta)
        out["problems_needed"] = needed
        more = f"; about {needed} problems would detect it (80% power)" if needed else ""
        warnings.append(f"{name}: {delta:+.1f} points ({b_only - a_only:+d} problems of {len(ids)}; one problem = "
                        f"{100.0 / len(ids):.1f} points) is within chance: the 95% interval [{lo:+.1f}, {hi:+.1f}] "
                        f"includes 0, the benchmark is too small for this difference{more}")
    out["warnings"] = warnings
    out["_pairs"] = (a, b)
    return out


def compare(a: RunPaths, b: RunPaths, resamples: int = 10_000, seed: int = 0) -> dict:
    """The comparison of run B with run A: per benchmark, the macro average, settings that differ,
    warnings. JSON-ready."""
    names_a, names_b = benchmarks(a), benchmarks(b)
    common = [n for n in names_a if n in names_b]
    warnings = [f"{n}: only in run {'A' if n in names_a else 'B'}; not compared"
                for n in [*names_a, *names_b] if n not in common]
    sa, sb = _sampling(a), _sampling(b)
    keys = ("n", "temperature", "top_p", "max_new_tokens", "backend")
    if any(sa.get(k) != sb.get(k) for k in keys if k in sa or k in sb):
        warnings.append("the runs sampled differently: A " + ", ".join(f"{k}={sa.get(k)}" for k in keys) +
                        "; B " + ", ".join(f"{k}={sb.get(k)}" for k in keys))
    per = {n: compare_benchmark(n, problems(a, n), problems(b, n), resamples, seed) for n in common}
    for result in per.values():
        warnings += result["warnings"]
    scored = {n: r for n, r in per.items() if r["n_items"]}
    macro = None
    if scored:
        pairs = [r.pop("_pairs") for r in scored.values()]
        deltas = [r["delta"] for r in scored.values()]
        delta = sum(deltas) / len(deltas)
        lo, hi = paired_bootstrap(pairs, resamples, seed)
        var = sum(_var_of_mean([y - x for x, y in zip(*p)]) for p in pairs) / len(pairs) ** 2
        se = 100.0 * math.sqrt(var)
        macro = {"n_items": sum(r["n_items"] for r in scored.values()), "benchmarks": len(scored),
                 "score_a": sum(r["score_a"] for r in scored.values()) / len(scored),
                 "score_b": sum(r["score_b"] for r in scored.values()) / len(scored),
                 "delta": delta, "ci95": [lo, hi], "se": se, "p_value": normal_p(delta, se),
                 "test": "normal, benchmark variances summed",
                 "a_only": sum(r["a_only"] for r in scored.values()),
                 "b_only": sum(r["b_only"] for r in scored.values()), "significant": lo > 0 or hi < 0}
    for r in per.values():
        r.pop("_pairs", None)
        r.pop("warnings")
    return {"run_a": str(a.root), "run_b": str(b.root),
            "settings": settings_diff(a, b),
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": 0.95, "z": Z95},
            "benchmarks": per, "macro": macro, "warnings": warnings}


def _var_of_mean(d: list[float]) -> float:
    if len(d) < 2:
        return 0.0
    m = sum(d) / len(d)
    return sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d)


def _p(p) -> str:
    if p is None or p != p:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def to_text(result: dict) -> str:
    """The comparison as a terminal table, settings that differ and warnings."""
    lines = [f"A: {result['run_a']}", f"B: {result['run_b']}", *settings_text(result["settings"])]
    header = f"{'benchmark':<14} {'n':>5} {'A':>7} {'B':>7} {'Δ B-A':>7}  {'95% CI':<16} {'p':>7}  " \
             f"{'A only':>6} {'B only':>6}  test"
    lines += ["", header, "-" * len(header)]
    rows = [(n, r) for n, r in result["benchmarks"].items()] + ([("macro", result["macro"])] if result["macro"] else [])
    for name, r in rows:
        if not r["n_items"]:
            lines.append(f"{name:<14} {0:>5}  no problem in common")
            continue
        lo, hi = r["ci95"]
        mark = "*" if r["significant"] else " "
        lines.append(f"{name:<14} {r['n_items']:>5} {r['score_a']:>7.1f} {r['score_b']:>7.1f} {r['delta']:>+7.1f}{mark} "
                     f"[{lo:+6.1f}, {hi:+6.1f}] {_p(r['p_value']):>7}  {r['a_only']:>6} {r['b_only']:>6}  {r['test']}")
    boot = result["bootstrap"]
    lines += ["", f"Δ in points; * where the 95% interval (paired bootstrap over problems, {boot['resamples']} "
                  f"resamples, seed {boot['seed']}) excludes 0. A only / B only: problems on which that run scores higher."]
    if result["warnings"]:
        lines += ["", "warnings:"] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"
