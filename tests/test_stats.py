"""cft.stats against scipy and statsmodels on the same data."""
from __future__ import annotations

import math

import numpy as np
import pytest

from cft import stats

sm = pytest.importorskip("statsmodels.api")
from scipy import stats as sps  # noqa: E402
from statsmodels.stats.contingency_tables import mcnemar  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402


@pytest.mark.parametrize("right,n", [(0, 30), (1, 30), (12, 40), (40, 40), (250, 500), (7, 8)])
def test_one_sample_per_problem_is_the_wilson_interval(right, n):
    est = stats.score_estimate([[1]] * right + [[0]] * (n - right))
    lo, hi = proportion_confint(right, n, alpha=0.05, method="wilson")
    assert est.method == "wilson" and est.score == pytest.approx(100 * right / n)
    assert est.ci95 == pytest.approx((100 * lo, 100 * hi), abs=1e-9)
    assert est.se == pytest.approx(100 * math.sqrt(right / n * (1 - right / n) / n))
    assert est.problem_points == pytest.approx(100 / n)


def _sampled(problems: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(0.6, 0.8, size=problems)  # some problems always right, some never
    return (rng.random((problems, n)) < difficulty[:, None]).astype(float)


def test_clustered_se_is_statsmodels_cluster_robust_se_of_the_mean():
    outcomes = _sampled(40, 16, 0)
    est = stats.score_estimate(outcomes.tolist())
    y = outcomes.ravel()
    groups = np.repeat(np.arange(outcomes.shape[0]), outcomes.shape[1])
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert est.method == "clustered" and est.n_samples == 16
    assert est.score == pytest.approx(100 * fit.params[0])
    assert est.se == pytest.approx(100 * fit.bse[0], rel=1e-9)
    assert est.se == pytest.approx(100 * sps.sem(outcomes.mean(axis=1)), rel=1e-9)
    assert est.ci95 == pytest.approx((est.score - 1.959963984540054 * est.se, est.score + 1.959963984540054 * est.se))


def test_between_and_within_parts_add_up_and_within_shrinks_with_more_samples():
    est = stats.score_estimate(_sampled(60, 4, 1).tolist())
    assert est.se_between ** 2 + est.se_within ** 2 == pytest.approx(est.se ** 2)
    more = stats.score_estimate(_sampled(60, 64, 1).tolist())
    assert more.se_within < est.se_within
    # every problem decided (all samples agree): nothing comes from the samples drawn
    decided = stats.score_estimate([[1.0] * 8] * 10 + [[0.0] * 8] * 30)
    assert decided.se_within == 0 and decided.se_between == pytest.approx(decided.se)


def test_macro_se_adds_the_benchmarks_variances():
    a, b = stats.score_estimate([[1]] * 3 + [[0]] * 27), stats.score_estimate(_sampled(50, 4, 6).tolist())
    macro = stats.macro_estimate([a, b])
    assert macro.score == pytest.approx((a.score + b.score) / 2)
    assert macro.se == pytest.approx(math.hypot(a.half_width / 1.959963984540054, b.se) / 2)
    # a benchmark at 0 % still carries its Wilson interval's uncertainty into the average
    zero = stats.score_estimate([[0]] * 40)
    assert zero.se == 0 and stats.macro_estimate([zero, zero]).half_width > 0


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (1, 4), (3, 3), (2, 11), (40, 61)])
def test_exact_mcnemar_matches_statsmodels(a_only, b_only):
    table = [[20, a_only], [b_only, 15]]
    assert stats.mcnemar_exact(a_only, b_only) == pytest.approx(mcnemar(table, exact=True).pvalue)


def test_paired_tests_match_scipy():
    a, b = _sampled(50, 8, 2).mean(axis=1), _sampled(50, 8, 3).mean(axis=1)
    got = stats.paired_tests(a.tolist(), b.tolist())
    assert got["t_test"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    assert got["wilcoxon"] == pytest.approx(sps.wilcoxon(b, a).pvalue)
    assert stats.paired_tests([0.5, 1.0], [0.5, 1.0]) == {"t_test": 1.0, "wilcoxon": 1.0}


def test_paired_bootstrap_agrees_with_scipy_and_is_seeded():
    rng = np.random.default_rng(4)
    a = (rng.random(300) < 0.4).astype(float)
    b = np.where(rng.random(300) < 0.15, 1 - a, a)  # B flips 15 % of A's verdicts
    ours = stats.paired_bootstrap([(a, b)], resamples=20_000, seed=7)
    ref = sps.bootstrap((a, b), lambda x, y, axis: 100 * (y.mean(axis) - x.mean(axis)), paired=True,
                        vectorized=True, n_resamples=20_000, method="percentile",
                        rng=np.random.default_rng(1)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.5)  # two Monte Carlo runs: within half a point
    assert ours == stats.paired_bootstrap([(a, b)], resamples=20_000, seed=7)
    assert ours != stats.paired_bootstrap([(a, b)], resamples=20_000, seed=8)


def test_stratified_bootstrap_of_a_macro_difference_is_the_mean_of_the_strata():
    rng = np.random.default_rng(5)
    small = (rng.random(30) < 0.3).astype(float), (rng.random(30) < 0.5).astype(float)
    large = (rng.random(500) < 0.6).astype(float), (rng.random(500) < 0.6).astype(float)
    lo, hi = stats.paired_bootstrap([small, large], resamples=20_000, seed=0)
    delta = 100 * ((small[1].mean() - small[0].mean()) + (large[1].mean() - large[0].mean())) / 2
    se = 100 * math.sqrt(sps.sem(small[1] - small[0]) ** 2 + sps.sem(large[1] - large[0]) ** 2) / 2
    assert lo < delta < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.1)  # the normal interval's width, roughly


def test_problems_needed_follows_the_paired_power_formula():
    d = [1.0] * 3 + [-1.0] * 1 + [0.0] * 36
    sd = np.std(d, ddof=1)
    assert stats.problems_needed(d, 5.0) == math.ceil(((1.959963984540054 + 0.8416) * 100 * sd / 5.0) ** 2)
    assert stats.problems_needed([0.0, 0.0], 5.0) is None
