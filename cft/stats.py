"""Statistics for evaluation scores: intervals on one run's scores, and paired tests between runs.

Every score is a percentage over problems; every function takes per-problem outcomes (a list of
0/1 verdicts per problem, one per sample) so that the unit of resampling is the problem, as in
Miller 2024, "Adding Error Bars to Evals" (arXiv 2411.00640):

- one sample per problem: the Wilson interval of a binomial proportion (well-behaved at 0 %,
  100 % and on 30-problem benchmarks, where the normal interval is not);
- n samples per problem: the problem-clustered standard error, i.e. the standard error of the
  mean of per-problem means, split into a between-problem part (which problems were drawn) and a
  within-problem part (which samples were drawn; it shrinks as n grows). It is Miller's clustered
  SE with the G/(G-1) small-sample factor that statsmodels' cluster-robust covariance applies;
- a macro average over benchmarks (independent problem sets): SE = sqrt(sum SE_b^2) / B, each
  SE_b read off its interval (interval_se: a Wilson interval's stays above 0 at 0 % and 100 %);
- between two runs on the same problems: a seeded paired bootstrap over problems (stratified by
  benchmark for the macro average: scipy.stats.bootstrap resamples one data set, not several of
  different sizes, which is why it is written here), the exact McNemar test for one sample per
  problem, and the paired t-test (with Wilcoxon's signed-rank test beside it) on per-problem
  means for several.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
Outcomes = Sequence[Sequence[float]]  # per problem, its samples' verdicts (1 right, 0 wrong)


@dataclass
class Estimate:
    """A score (percent) with its standard error and 95 % interval, in points."""
    score: float
    se: float
    ci95: tuple[float, float]
    n_problems: int
    n_samples: float  # per problem (the mean, should they differ)
    method: str  # "wilson" | "clustered" | "macro"
    se_between: float | None = None  # n > 1 only: the problems drawn
    se_within: float | None = None   # n > 1 only: the samples drawn

    @property
    def half_width(self) -> float:
        return (self.ci95[1] - self.ci95[0]) / 2

    @property
    def problem_points(self) -> float | None:
        """What one problem is worth, in points (100 / problems)."""
        return 100.0 / self.n_problems if self.n_problems else None

    def to_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95), "half_width": self.half_width,
                "problem_points": self.problem_points}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (as a fraction); (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    """Sample variance (ddof=1); nan for fewer than two values."""
    if len(xs) < 2:
        return math.nan
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def problem_means(outcomes: Outcomes) -> list[float]:
    return [_mean([float(v) for v in problem]) for problem in outcomes]


def score_estimate(outcomes: Outcomes) -> Estimate:
    """A benchmark's score with SE and 95 % interval: Wilson when every problem has one sample,
    the problem-clustered SE (normal interval) split into between and within parts otherwise."""
    if any(len(problem) == 0 for problem in outcomes):
        raise ValueError("every problem needs at least one graded sample")
    g = len(outcomes)
    if g == 0:
        return Estimate(math.nan, math.nan, (math.nan, math.nan), 0, 0, "wilson")
    sizes = [len(problem) for problem in outcomes]
    means = problem_means(outcomes)
    score = 100.0 * _mean(means)
    if max(sizes) == 1:
        right = sum(int(round(m)) for m in means)
        lo, hi = wilson(right, g)
        p = right / g
        return Estimate(score, 100.0 * math.sqrt(p * (1 - p) / g), (100.0 * lo, 100.0 * hi), g, 1, "wilson")
    total = _var(means) / g  # Var(mean of problem means) = between + within / n
    within = sum(_var([float(v) for v in problem]) / len(problem) for problem in outcomes
                 if len(problem) > 1) / (g * g)
    se = 100.0 * math.sqrt(total) if not math.isnan(total) else math.nan
    between = 100.0 * math.sqrt(max(0.0, total - within)) if not math.isnan(total) else math.nan
    return Estimate(score, se, (score - Z95 * se, score + Z95 * se), g, _mean(sizes), "clustered",
                    se_between=between, se_within=100.0 * math.sqrt(within))


def interval_se(e: Estimate) -> float:
    """The SE a benchmark brings to a macro average: its interval's half-width / 1.96. For a
    clustered estimate that is its SE; for a Wilson one, the SE its interval implies, which,
    unlike the binomial SE, is not 0 at a score of 0 % or 100 %."""
    return e.half_width / Z95


def macro_estimate(estimates: Sequence[Estimate]) -> Estimate:
    """The mean of benchmark scores; benchmarks are independent, so their variances add
    (each benchmark's from its interval: interval_se)."""
    b = len(estimates)
    if b == 0:
        return Estimate(math.nan, math.nan, (math.nan, math.nan), 0, 0, "macro")
    score = _mean([e.score for e in estimates])
    se = math.sqrt(sum(interval_se(e) ** 2 for e in estimates)) / b
    return Estimate(score, se, (score - Z95 * se, score + Z95 * se), sum(e.n_problems for e in estimates),
                    _mean([e.n_samples for e in estimates]), "macro")


# --- two runs on the same problems -------------------------------------------------------------

def paired_bootstrap(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], resamples: int = 10_000,
                     seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval (points) of mean over strata of (mean B - mean A), resampling the
    problems of each stratum (a benchmark: its per-problem scores of runs A and B, aligned) with
    replacement, independently per stratum, with one seeded generator. One stratum: the paired
    bootstrap of a benchmark's difference."""
    import numpy as np

    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for a, b in pairs:
        d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
        if d.size == 0:
            raise ValueError("a stratum without problems")
        step = max(1, 2_000_000 // d.size)  # bounded memory for GSM8K-sized sets
        for start in range(0, resamples, step):
            rows = min(step, resamples - start)
            total[start:start + rows] += d[rng.integers(0, d.size, size=(rows, d.size))].mean(axis=1)
    total *= 100.0 / len(pairs)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(total, [alpha, 1 - alpha])
    return float(lo), float(hi)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: a binomial test of b_only
    among a_only + b_only at 1/2 (statsmodels' mcnemar(exact=True)); 1.0 without discordance."""
    from scipy.stats import binomtest

    n = a_only + b_only
    return 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5).pvalue)


def paired_tests(a: Sequence[float], b: Sequence[float]) -> dict:
    """p-values of the paired t-test and of Wilcoxon's signed-rank test on per-problem means;
    1.0 when every difference is zero (both tests are undefined there: nothing differs)."""
    from scipy.stats import ttest_rel, wilcoxon

    if len(a) != len(b):
        raise ValueError("paired tests need the same problems in both runs")
    if all(x == y for x, y in zip(a, b)):
        return {"t_test": 1.0, "wilcoxon": 1.0}
    t = float(ttest_rel(b, a).pvalue) if len(a) > 1 else math.nan
    w = float(wilcoxon(b, a).pvalue) if len(a) > 1 else math.nan
    return {"t_test": t, "wilcoxon": w}


def normal_p(delta: float, se: float) -> float:
    """Two-sided p-value of delta / se under the normal."""
    if se == 0 or math.isnan(se):
        return 1.0 if delta == 0 else (0.0 if se == 0 else math.nan)
    return math.erfc(abs(delta / se) / math.sqrt(2))


def problems_needed(differences: Sequence[float], delta: float, power_z: float = 0.8416) -> int | None:
    """Problems a paired comparison needs to detect `delta` (points) at 5 % two-sided with 80 %
    power, given the per-problem differences seen (fractions): ((z_.975 + z_.8) sd / delta)^2."""
    sd = math.sqrt(_var(differences)) if len(differences) > 1 else math.nan
    if not delta or math.isnan(sd) or sd == 0:
        return None
    return math.ceil(((Z95 + power_z) * 100.0 * sd / abs(delta)) ** 2)
