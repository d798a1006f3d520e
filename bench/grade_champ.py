"""Grade CHAMP's ~19K model answers: parallel Grader vs the same Grader with one worker.

    python bench/grade_champ.py [--limit N] [--workers W] [--timeout S] [--checker cft|math-verify] [--judge]

Each CHAMP conversation ends with the model's one-sentence summary; its final answer is
`extract_answer(summary)` (the summary itself when it states none explicitly), graded against the
problem's reference. Prints pairs/s for both runs, their ratio, whether the verdict lists are
identical, and the verdict counts. `--judge` also prints `judge_free_text` right/wrong/unknown.
"""
from __future__ import annotations

import argparse
import collections
import os
import time


def champ_pairs(limit: int | None) -> list[tuple[str | None, str, None]]:
    import champ_dataset

    from cft.answers import extract_answer

    pairs = []
    for problem in champ_dataset.load("v0").problems.values():
        for conversation in problem.conversations.values():
            summary = conversation.messages[-1].text
            prediction = (extract_answer(summary) or summary) if summary else None
            pairs.append((prediction, problem.answer, None))
    return pairs[:limit]


def timed_grade(pairs, workers: int, timeout: float, checker: str):
    from cft.answers import Grader

    with Grader(timeout=timeout, workers=workers, checker=checker) as grader:
        grader.grade([("1", "2", None)] * grader.workers)  # start the workers outside the timing
        grader.stats.clear()
        start = time.perf_counter()
        verdicts = grader.grade(pairs, progress=True)
        seconds = time.perf_counter() - start
    return verdicts, seconds, dict(grader.stats)


def judge_counts(limit: int | None) -> collections.Counter:
    import champ_dataset

    from cft.datasets.champ_judge import judge_free_text

    counts: collections.Counter = collections.Counter()
    for problem in champ_dataset.load("v0").problems.values():
        for conversation in problem.conversations.values():
            counts[judge_free_text(conversation.messages[-1].text or "", problem.answer, question=problem.text)] += 1
            if limit and sum(counts.values()) >= limit:
                return counts
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="grade only the first N pairs")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers (default: all cores)")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--checker", default="cft", choices=("cft", "math-verify"))
    parser.add_argument("--judge", action="store_true", help="also count judge_free_text verdicts")
    args = parser.parse_args()

    pairs = champ_pairs(args.limit)
    parallel, t_par, stats = timed_grade(pairs, args.workers, args.timeout, args.checker)
    sequential, t_seq, _ = timed_grade(pairs, 1, args.timeout, args.checker)
    n = len(pairs)
    print(f"pairs: {n}  checker: {args.checker}  timeout: {args.timeout}s")
    print(f"parallel   ({args.workers or os.cpu_count()} workers): {n / t_par:8.1f} pairs/s  ({t_par:.1f}s)")
    print(f"sequential (1 worker):        {n / t_seq:8.1f} pairs/s  ({t_seq:.1f}s)")
    print(f"speed-up: {t_seq / t_par:.2f}x")
    differing = [i for i in range(n) if parallel[i] != sequential[i]]
    print(f"verdicts identical: {not differing}" + (f" ({len(differing)} differ, e.g. pair {differing[0]}: "
          f"{parallel[differing[0]]} vs {sequential[differing[0]]})" if differing else ""))
    counts = collections.Counter(v.value for v in parallel)
    print("counts: " + " ".join(f"{k}={counts[k]}" for k in ("equal", "different", "timeout", "unparsable"))
          + f"  (fast path {stats.get('fast_path', 0)}, killed {stats.get('killed', 0)})")
    if args.judge:
        judged = judge_counts(args.limit)
        total = sum(judged.values())
        print("judge_free_text: " + " ".join(f"{k}={judged[k]} ({judged[k] / total:.1%})" for k in ("right", "wrong", "unknown")))


if __name__ == "__main__":
    main()
