"""Hostile input through the answer checker and answer extraction: ours against today's, in one run.

    python bench/hostile_inputs.py [--baseline-rev REV] [--workers 2] [--timeout 5] [--scale 1] [--cap 20]

Grading: the hostile set of tests/hostile_answers.py (numbers of 1,000 to 50,000 digits, plain
and in fractions, and the fuzzed shapes: towers, repeated operators, deep braces, long lists,
unicode, whitespace, garbage) through one Grader. Prints the total time, the verdicts, and the
slowest pair in the calling process (`Grader.local_durations`, where no timeout applies) and
overall. Today's checker (`cft/answers` at --baseline-rev) ran its fast path in that process
too: it is timed per family in a child process that is stopped after --cap seconds.

Extraction: each hostile completion (`tests/hostile_answers.COMPLETIONS`) at 1 MB through ours;
today's at doubling sizes up to --budget seconds a call (each stopped after --cap), its time
extrapolated to 1 MB at the growth exponent fitted to those calls (measured where it gets there).
"""
from __future__ import annotations

import argparse
import collections
import importlib
import math
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]
BASELINE_REV = "ee30e7a"  # cft/answers before issue #21's bounds and issue #25's linear extraction
MB = 1_000_000


def _child(conn, fn, calls) -> None:
    for args in calls:
        start = time.perf_counter()
        try:
            fn(*args)
        except Exception:
            pass
        conn.send(time.perf_counter() - start)
    conn.send(None)


def capped(fn, calls: list[tuple], cap: float) -> tuple[float, float, int]:
    """(seconds, slowest call, calls finished) of `fn(*args)` for each of `calls`, run in a forked
    child that is killed once `cap` seconds have passed."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, fn, calls), daemon=True)
    proc.start()
    deadline, times = time.monotonic() + cap, []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not parent.poll(left):
            times.append(cap - sum(times))  # the call still running when stopped
            proc.kill()
            break
        got = parent.recv()
        if got is None:
            break
        times.append(got)
    proc.join()
    return sum(times), max(times, default=0.0), len(times) - (proc.exitcode != 0)


def _family_of(pairs, families) -> list[str]:
    owner = {a: name for name, answers in families.items() for a in answers}
    return [owner.get(p) or owner.get(r) or "near copies" for p, r in pairs]


def grading(args, baseline) -> None:
    from hostile_answers import families, hostile_pairs

    from cft.answers import Grader

    pairs = hostile_pairs(args.scale)
    fams = _family_of(pairs, families(args.scale))
    size = sum(len(p) + len(r) for p, r in pairs) / MB
    print(f"hostile set: {len(pairs)} pairs, {size:.1f} MB, workers={args.workers} timeout={args.timeout}s")
    with Grader(timeout=args.timeout, workers=args.workers) as grader:
        grader.grade([(f"x^{k}+1", f"1+x^{k}") for k in range(2, 2 + grader.workers)])  # start the workers
        grader.stats.clear()
        start = time.perf_counter()
        verdicts = grader.grade(pairs)
        seconds = time.perf_counter() - start
        local, durations, stats = grader.local_durations, grader.durations, dict(grader.stats)
    counts = collections.Counter(v.value for v in verdicts)
    slow_local = max(range(len(pairs)), key=local.__getitem__)
    slow = max(range(len(pairs)), key=durations.__getitem__)
    print(f"ours: {seconds:.1f}s in all ({len(pairs) / seconds:.0f} pairs/s)  {dict(counts)}  fast path "
          f"{stats.get('fast_path', 0)}, killed {stats.get('killed', 0)}, crashed {stats.get('crashed', 0)}")
    print(f"  calling process: {sum(local):.2f}s in all, slowest pair {local[slow_local] * 1e3:.2f} ms "
          f"({len(pairs[slow_local][0])} vs {len(pairs[slow_local][1])} chars: {pairs[slow_local][0][:40]!r})")
    print(f"  slowest pair overall: {durations[slow]:.2f}s ({pairs[slow][0][:40]!r} vs {pairs[slow][1][:40]!r})")
    print(f"fast path in the calling process, per family (today's stopped after {args.cap:.0f}s):")
    for family in dict.fromkeys(fams):
        idx = [i for i, f in enumerate(fams) if f == family]
        ours = sum(local[i] for i in idx)
        old, old_max, done = capped(baseline.check.fast_check, [pairs[i] for i in idx], args.cap)
        stopped = done < len(idx)
        print(f"  {family:12s} {len(idx):4d} pairs  ours {ours:7.3f}s (slowest {max(local[i] for i in idx) * 1e3:6.2f} ms)"
              f"  today's {'>=' if stopped else '  '}{old:7.2f}s (slowest {'>=' if stopped else '  '}{old_max:6.2f}s, "
              f"{done}/{len(idx)} done)  {'>=' if stopped else '  '}{old / max(ours, 1e-6):8.0f}x")


def extraction(args, baseline) -> None:
    from hostile_answers import COMPLETIONS, hostile_completion

    from cft.answers import extract_with_rule

    print(f"extraction of 1 MB hostile completions; today's at doubling sizes until a call takes over "
          f"{args.budget:.0f}s, extrapolated to 1 MB at the growth fitted to its calls of 0.05s or more:")
    for name in COMPLETIONS:
        text, bench, expected = hostile_completion(name, MB)
        start = time.perf_counter()
        got = extract_with_rule(text, bench)
        ours = time.perf_counter() - start
        runs = []  # (size, seconds) of today's calls that finished
        for n in [250 * 2**i for i in range(12)] + [MB]:
            seconds, _, done = capped(baseline.extract.extract_with_rule, [hostile_completion(name, n)[:2]], args.cap)
            if not done:
                break
            runs.append((n, seconds))
            if seconds > args.budget:
                break
        ok = "ok" if got == expected else f"WRONG {got!r}"
        timed = [(n, t) for n, t in runs if t >= 0.05]  # shorter calls are mostly noise on a shared box
        if runs and runs[-1][0] == MB:
            old, how = runs[-1][1], "measured at 1 MB"
        elif len(timed) >= 2:
            xs, ys = [math.log(n) for n, _ in timed], [math.log(t) for _, t in timed]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            exponent = min(3.0, max(1.0, slope))
            (n, t) = timed[-1]
            old, how = t * (MB / n) ** exponent, f"{t:.2f}s at {n:,} chars, time ~ size^{exponent:.1f}"
        else:
            old, how = float("inf"), f"{runs[-1][1] if runs else args.cap:.2f}s at {runs[-1][0] if runs else 250:,} chars"
        print(f"  {name:25s} ours {ours:6.3f}s ({ok})  today's ~{old:9.3g}s at 1 MB ({how})  "
              f"{old / max(ours, 1e-6):,.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="git revision of today's cft/answers")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the longest hostile answers")
    parser.add_argument("--cap", type=float, default=20.0, help="seconds after which today's code is stopped")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of today's extraction per size step")
    parser.add_argument("--only", choices=("grading", "extraction"), default=None)
    args = parser.parse_args()
    from grade_corpus import BASELINE_PACKAGE, baseline_grader_class

    with tempfile.TemporaryDirectory() as tmp:
        baseline_grader_class(args.baseline_rev, Path(tmp))
        baseline = argparse.Namespace(check=importlib.import_module(f"{BASELINE_PACKAGE}.check"),
                                      extract=importlib.import_module(f"{BASELINE_PACKAGE}.extract"))
        if args.only != "extraction":
            grading(args, baseline)
        if args.only != "grading":
            extraction(args, baseline)


if __name__ == "__main__":
    main()
