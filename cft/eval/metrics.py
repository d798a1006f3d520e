"""Scores of a benchmark from its graded samples: acc, avg@n, pass@k, maj@k, truncation.

Every score is a percentage over problems. With n samples per problem (the first is sample 0):
- `acc`: sample 0 right (greedy when n=1);
- `avg@n`: the share of a problem's n samples that are right (DeepSeek-R1's "pass@1");
- `pass@k`: Chen et al. 2021's unbiased estimator of "one of k samples drawn from the n is right",
  1 - C(n-c, k) / C(n, k) for c right samples, computed as the product
  prod_{i=n-c+1..n} (1 - k/i) (their numerically stable form: no huge binomials);
- `maj@k`: the answer most of the *first k* samples give is right. Samples vote by answer class
  (cft.eval.votes: equivalent answers are one class); a sample with no extracted answer does not
  vote. Tie rule: of the classes with the most votes, the one that appears first among the k
  samples wins, so maj@1 equals acc. The winner is right when its first sample's verdict is.
  No vote at all (no answer in the first k) counts as wrong.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n samples, c of
    them right, is right (unbiased; Chen et al. 2021, `1 - prod(1 - k / arange(n-c+1, n+1))`)."""
    if not 0 < k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@{k} of n={n} samples with c={c} right")
    if n - c < k:
        return 1.0
    result = 1.0
    for i in range(n - c + 1, n + 1):
        result *= 1.0 - k / i
    return 1.0 - result


def majority(classes: Sequence[int | None], k: int) -> int | None:
    """Index of the sample that speaks for the winning class among the first k (its first
    sample), or None when none of them has an answer. Ties: the class seen first wins."""
    votes = Counter(c for c in classes[:k] if c is not None)
    if not votes:
        return None
    top = max(votes.values())
    return next(j for j, c in enumerate(classes[:k]) if c is not None and votes[c] == top)


def benchmark_metrics(correct: Sequence[Sequence[bool]], classes: Sequence[Sequence[int | None]],
                      finish_reasons: Sequence[Sequence[str]], ks: Sequence[int], n: int | None = None) -> dict:
    """acc, avg@n, pass@k and maj@k (k in `ks` up to n) in percent, and `cut_by_max_tokens`: the
    percentage of all samples that max_new_tokens cut (finish reason "length"). `n`: the samples
    per problem (default: as many as the first problem has)."""
    problems = len(correct)
    n = n or (len(correct[0]) if problems else 1)
    if any(len(row) != n for row in correct):
        raise ValueError("every problem needs the same number of samples")

    def percent(values) -> float:
        return 100.0 * sum(values) / max(1, problems)

    rights = [sum(row) for row in correct]
    out = {"acc": percent(row[0] for row in correct),
           f"avg@{n}": 100.0 * sum(rights) / max(1, problems * n)}
    for k in sorted({k for k in ks if 1 <= k <= n}):
        out[f"pass@{k}"] = percent(pass_at_k(n, c, k) for c in rights)
    for k in sorted({k for k in ks if 1 <= k <= n}):
        winners = [majority(cls, k) for cls in classes]
        out[f"maj@{k}"] = percent(w is not None and row[w] for w, row in zip(winners, correct))
    samples = [reason for row in finish_reasons for reason in row]
    out["cut_by_max_tokens"] = 100.0 * sum(r == "length" for r in samples) / max(1, len(samples))
    return out


def macro_average(results: dict[str, dict]) -> dict:
    """The mean over benchmarks of every score that all of them have; timeouts summed."""
    scores = [r for r in results.values()]
    if not scores:
        return {}
    common = [k for k, v in scores[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
              and k != "generation_s" and all(k in r for r in scores)]
    sums = {"n", "timeouts", "vote_timeouts"}
    return {k: (sum(r[k] for r in scores) if k in sums else sum(r[k] for r in scores) / len(scores))
            for k in common}
