"""Grading and majority votes at sampling scale: canonical-first grouping vs all pairs.

    python bench/vote_throughput.py [--n 16] [--workers 2] [--timeout 5] [--limit N] [--seed 0]

On every item of the seven shipped benchmarks, n synthetic samples per problem (16: about
58,000), built deterministically as a model that mostly agrees with itself writes them: each
sample is, with probability 0.6, the reference in one of its equivalent forms (delimiters,
spacing, `\\dfrac`, `x =`, a trailing period, the number as a decimal or a fraction), else one
of three wrong answers (other references of the same benchmark) in one of *its* forms.

In one process, each with a fresh `cft.answers.Grader` whose workers are started and warmed
outside the timing:
1. grading: every (sample, reference) pair: pairs/s;
2. voting, canonical-first (`cft.eval.votes.answer_classes`: canonical forms, then the checker
   across the remaining classes), alone and as the eval stage runs it (with the verdicts of step 1,
   which settle right-vs-right and right-vs-wrong class pairs without a check), against all pairs
   (the checker on every pair of a problem's n answers, then union-find: how a checker-based vote
   is done without canonical forms; the same checker, so the difference is the grouping alone):
   seconds, pairs sent to the checker, the ratios, and on how many problems the partitions differ.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


SEVEN = ("math-500", "minerva_math", "gsm8k", "olympiadbench", "aime24", "amc23", "theoremqa")


def references() -> list[tuple[str, str]]:
    """(benchmark, reference) for every item of the seven shipped test sets (3,636 problems)."""
    from cft.benchmarks import SHIPPED, get_benchmark

    return [(name, it["reference"]) for name in SEVEN for it in get_benchmark(name).load(SHIPPED) if it["reference"]]


def forms(ref: str) -> list[str]:
    """Equivalent ways to write `ref` that a model writes."""
    from cft.answers import normalize
    from cft.answers.check import parse_number

    out = [ref, f"${ref}$", ref.replace("\\frac", "\\dfrac"), ref.replace(" ", ""), f"{ref}.",
           f"x = {ref}" if "=" not in ref else ref]
    text = normalize(ref)
    parsed = parse_number(text) if len(text) <= 64 else None
    if parsed is not None:
        value: Fraction = parsed[0]
        out.append(f"{float(value):.12g}")
        if value.denominator != 1 and value.denominator < 1000:
            out += [f"\\frac{{{value.numerator}}}{{{value.denominator}}}", f"{value.numerator}/{value.denominator}"]
    return list(dict.fromkeys(out))


def synthetic_samples(refs, n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    by_bench: dict[str, list[str]] = {}
    for bench, ref in refs:
        by_bench.setdefault(bench, []).append(ref)
    problems = []
    for bench, ref in refs:
        wrong = [w for w in rng.sample(by_bench[bench], min(4, len(by_bench[bench]))) if w != ref][:3]
        right_forms, wrong_forms = forms(ref), [forms(w) for w in wrong]
        problems.append([rng.choice(right_forms) if rng.random() < 0.6 or not wrong_forms
                         else rng.choice(rng.choice(wrong_forms)) for _ in range(n)])
    return problems


def fresh_grader(workers: int, timeout: float):
    from cft.answers import Grader

    grader = Grader(timeout=timeout, workers=workers)
    grader.grade([(f"x^{k}+1", f"1+x^{k}") for k in range(2, 2 + grader.workers)])  # start + warm the workers
    grader.stats.clear()
    return grader


def all_pairs_classes(problems: list[list[str]], grader) -> tuple[list[list[int]], int]:
    """Every pair of a problem's answers through the checker; EQUAL pairs merge (union-find)."""
    from cft.answers import Verdict

    pairs = [(p, i, j) for p, answers in enumerate(problems) for i in range(len(answers))
             for j in range(i + 1, len(answers))]
    verdicts = grader.grade([(problems[p][i], problems[p][j]) for p, i, j in pairs])
    parents = [list(range(len(a))) for a in problems]

    def root(p, i):
        while parents[p][i] != i:
            parents[p][i] = parents[p][parents[p][i]]
            i = parents[p][i]
        return i

    for (p, i, j), v in zip(pairs, verdicts):
        if v == Verdict.EQUAL:
            a, b = root(p, i), root(p, j)
            parents[p][max(a, b)] = min(a, b)
    classes = []
    for p, answers in enumerate(problems):
        renumber: dict[int, int] = {}
        classes.append([renumber.setdefault(root(p, i), len(renumber)) for i in range(len(answers))])
    return classes, len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="samples per problem")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--limit", type=int, default=None, help="use only N problems (spread over benchmarks)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from cft.eval.votes import answer_classes

    refs = references()
    if args.limit:
        refs = random.Random(args.seed).sample(refs, args.limit)
    problems = synthetic_samples(refs, args.n, args.seed)
    pairs = [(s, ref) for (_, ref), samples in zip(refs, problems) for s in samples]
    print(f"{len(refs)} problems x n={args.n}: {len(pairs)} (sample, reference) pairs; "
          f"workers={args.workers} timeout={args.timeout}s")

    with fresh_grader(args.workers, args.timeout) as grader:
        start = time.perf_counter()
        verdicts = grader.grade(pairs)
        t_grade = time.perf_counter() - start
        stats = dict(grader.stats)
    right = sum(v.value == "equal" for v in verdicts)
    graded = [verdicts[p * args.n: (p + 1) * args.n] for p in range(len(problems))]
    print(f"grading: {len(pairs) / t_grade:9.1f} pairs/s ({t_grade:.1f}s)  equal {right}  "
          f"fast path {stats.get('fast_path', 0)}  cached {stats.get('cached', 0)}  "
          f"timeouts {stats.get('timeout', 0)}  killed {stats.get('killed', 0)}")

    def canonical_first(with_verdicts: bool):
        with fresh_grader(args.workers, args.timeout) as grader:
            start = time.perf_counter()
            classes, timeouts = answer_classes(problems, grader, graded if with_verdicts else None)
            seconds = time.perf_counter() - start
            return classes, timeouts, seconds, sum(grader.stats[v] for v in ("equal", "different", "unparsable", "timeout"))

    ours, vote_timeouts, t_ours, checks_ours = canonical_first(False)
    staged, staged_timeouts, t_staged, checks_staged = canonical_first(True)
    with fresh_grader(args.workers, args.timeout) as grader:
        start = time.perf_counter()
        pairwise, checks_all = all_pairs_classes(problems, grader)
        t_all = time.perf_counter() - start
        all_timeouts = grader.stats.get("timeout", 0)
    print(f"vote, all pairs:                    {t_all:8.2f}s  {checks_all:7d} checks  ({all_timeouts} timed out)")
    for name, classes, seconds, checks, timeouts in [
            ("canonical-first", ours, t_ours, checks_ours, vote_timeouts),
            ("canonical-first + verdicts (eval)", staged, t_staged, checks_staged, staged_timeouts)]:
        differ = sum(a != b for a, b in zip(classes, pairwise))
        print(f"vote, {name + ':':34s} {seconds:8.2f}s  {checks:7d} checks  ({timeouts} timed out)  "
              f"{t_all / seconds:.1f}x faster, {checks_all / max(1, checks):.0f}x fewer checks than all pairs; "
              f"partition differs on {differ} of {len(problems)} problems")


if __name__ == "__main__":
    main()
