"""The process-isolated Grader on an adversarial corpus, and the `python -m cft.answers` CLI."""
from __future__ import annotations

import random
import time

import pytest

from cft.answers import Grader, Verdict, check, fast_check
from cft.answers.check import within_fast_limits
from cft.datasets.champ_judge import judge_free_text
from cft.io import read_jsonl, write_jsonl
from helpers import cli

TIMEOUT = 1.0


def adversarial_corpus(seed: int = 0) -> list[tuple[str, str, None]]:
    """>= 500 (prediction, reference) pairs built to hang, overflow, or crash a naive checker."""
    rng = random.Random(seed)
    preds: list[str] = []
    preds += [f"{a}^{{{b}^{{{c}^{{{d}}}}}}}" for a, b, c, d in
              [(rng.randint(2, 9), rng.randint(5, 9), rng.randint(5, 9), rng.randint(5, 9)) for _ in range(6)]]
    preds += ["5^{5^{5^5}}", "9^{9^{9^9}}", "(10^{10})!", "1000000!"]
    preds += [f"{rng.randint(2, 99)}^{{{rng.randint(2, 40)}}}" for _ in range(40)]           # ordinary powers
    preds += [f"10^{{{rng.choice([400, 1000, 5000])}}}" for _ in range(20)]                   # huge, exact
    preds += [str(rng.randint(1, 9)) + "0" * rng.randint(300, 3000) for _ in range(20)]       # huge literals
    preds += ["x" * 10_000, "1+" * 5_000 + "1", "{" * 5_000, "\\frac{" * 3_000, "(" * 3_000 + "1" + ")" * 3_000]
    preds += ["\\sqrt{" * n + "2" + "}" * n for n in (50, 200, 1000)]
    preds += ["{" * n + "1" for n in range(1, 40)] + ["}" * n + "1" for n in range(1, 40)]    # unbalanced
    preds += ["\\frac{1}{2", "\\frac{1}{", "\\boxed{", "\\left( 1, 2", "[1, 2", "\\begin{pmatrix}1&2", "$", "\\", "^^^"]
    preds += [rng.choice(["(", "[", "\\{"]) + ",".join(str(rng.randint(-9, 9)) for _ in range(rng.randint(2, 30)))
              + rng.choice([")", "]", "\\}"]) for _ in range(100)]                            # tuples / intervals
    preds += [f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}" for _ in range(100)]           # plain decimals
    preds += [f"{rng.uniform(1, 9):.2f}e{rng.randint(-400, 400)}" for _ in range(60)]          # e-notation
    preds += [f"\\frac{{{rng.randint(1, 99)}}}{{{rng.randint(1, 99)}}}x^{{{rng.randint(1, 5)}}}" for _ in range(60)]
    refs = ["2", "10^{400}", "\\frac{1}{2}", "(1,2)", "x^2+1", "4.5\\times 10^{33}"]
    return [(p, refs[i % len(refs)], None) for i, p in enumerate(preds)]


@pytest.fixture(scope="module")
def graded():
    corpus = adversarial_corpus()
    start = time.monotonic()
    with Grader(timeout=TIMEOUT, workers=2) as grader:
        verdicts = grader.grade(corpus)
        durations, stats = list(grader.durations), dict(grader.stats)
    return corpus, verdicts, durations, stats, time.monotonic() - start


def test_adversarial_corpus_finishes_within_its_timeouts(graded):
    corpus, verdicts, durations, stats, wall = graded
    assert len(corpus) >= 500
    assert len(verdicts) == len(corpus) and all(isinstance(v, Verdict) for v in verdicts)
    overshoot = max(d - TIMEOUT for d in durations)
    timeouts = sum(v == Verdict.TIMEOUT for v in verdicts)
    print(f"\nadversarial corpus: {len(corpus)} pairs, {timeouts} timeouts, max overshoot {overshoot:.3f}s, "
          f"wall {wall:.1f}s, stats {stats}")
    assert overshoot < 0.1
    assert Verdict.EQUAL not in [v for (p, _, _), v in zip(corpus, verdicts) if "^{" in p and "^{" in p[p.index("^{") + 2:]]
    assert stats["timeout"] == timeouts >= stats.get("killed", 0)
    assert verdicts[corpus.index(("5^{5^{5^5}}", "2", None))] == Verdict.TIMEOUT


HOSTILE = ["5^{5^{5^5}}", "9^{9^{9^9}}", "(10^{10})!", "1000000!", "2^{10^{12}}", "x^{10^{9}}", "\\binom{10^{8}}{5}",
           "\\binom{100000000}{5}", "\\sqrt{" * 200 + "2" + "}" * 200, "1+" * 5_000 + "1", "9^9^9^9", "2**3**4**5**6"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_answers_are_settled_without_sympy(hostile):
    # decided by the structural guards, never equal: in this process when the answer is within the
    # fast path's sizes, else in a worker, where the full check settles it as quickly
    settled = (Verdict.TIMEOUT, Verdict.UNPARSABLE)
    assert fast_check(hostile, "2") in (settled if within_fast_limits(hostile) else (None,))
    assert check(hostile, "x^2+1") in settled


def test_hostile_answers_reach_a_worker_only_beyond_the_fast_path_sizes():
    with Grader(timeout=TIMEOUT, workers=1) as grader:
        verdicts = grader.grade([(h, "2") for h in HOSTILE])
    assert set(verdicts) <= {Verdict.TIMEOUT, Verdict.UNPARSABLE}
    small = sum(map(within_fast_limits, HOSTILE))
    assert grader.stats["fast_path"] == small == len(HOSTILE) - 2 and grader.stats["killed"] == 0


def test_repeated_pairs_come_from_the_cache_and_one_pool_serves_many_batches():
    pairs = [("x^2+2x+1", "(x+1)^2"), ("\\sqrt{8}", "2\\sqrt{2}"), ("3", "4")]
    with Grader(timeout=5.0, workers=1) as grader:
        first = grader.grade(pairs)
        pool = list(grader._pool)
        second = grader.grade(pairs * 3)
        assert grader._pool == pool  # the same workers: one pool for all batches
    assert first == [Verdict.EQUAL, Verdict.EQUAL, Verdict.DIFFERENT] and second == first * 3
    assert grader.stats["cached"] == 9


def test_free_text_judge_runs_behind_the_same_timeout():
    items = [("There are 252 strings.", "C(10, 5), or equivalently 252", None),
             ("There are 29 strings.", "C(10, 5), or equivalently 252", None),
             ("The answer is $x^{99999998}$.", "x^99999999", None)]  # hangs in-process: 3**99999999
    with Grader(timeout=TIMEOUT, workers=1) as grader:
        judged = grader.run(judge_free_text, items, fallback="unknown")
    assert judged == ["right", "wrong", "unknown"]
    assert grader.stats["killed"] == 1 and max(grader.durations) < TIMEOUT + 0.1


def test_grader_agrees_with_in_process_check_and_keeps_order():
    pairs = [("\\frac{1}{2}", "0.5", None), ("500", "5", None), (None, "1", None), ("x=3", "3", None),
             ("(0,5)", "[0,5]", None), ("4.5e33", "4.5 \\times 10^{33}", None), ("\\frac{1}{", "2", None)] * 3
    with Grader(timeout=5.0, workers=2) as grader:
        verdicts = grader.grade(pairs)
    assert verdicts == [check(p, r) for p, r, _ in pairs]
    assert grader.stats["fast_path"] > 0


def test_math_verify_checker_under_the_same_hard_timeout():
    pairs = [("\\frac{1}{2}", "0.5", None), ("3", "4", None), ("9^{9^{9^9}}", "2", None)]
    with Grader(timeout=TIMEOUT, workers=2, checker="math-verify") as grader:
        verdicts = grader.grade(pairs)
    assert verdicts[:2] == [Verdict.EQUAL, Verdict.DIFFERENT]
    assert verdicts[2] in (Verdict.TIMEOUT, Verdict.DIFFERENT, Verdict.UNPARSABLE)
    assert max(grader.durations) < TIMEOUT + 1.0


def test_cli_grades_a_file_and_keeps_fields(tmp_path):
    rows = [{"id": 1, "prediction": "\\frac12", "reference": "0.5"},
            {"id": 2, "prediction": "3", "reference": "4", "answer_type": "Numerical"},
            {"id": 3, "prediction": None, "reference": "4"},
            {"id": 4, "prediction": "5^{5^{5^5}}", "reference": "4"}]
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    write_jsonl(pairs, rows)
    result = cli(str(pairs), "--out", str(out), "--timeout", "1", "--workers", "2", "--compare",
                 module="cft.answers", outputs=tmp_path, cache=tmp_path, timeout=120, check=True)
    graded = read_jsonl(out)
    assert [g["verdict"] for g in graded] == ["equal", "different", "unparsable", "timeout"]
    assert all(g.items() >= r.items() for g, r in zip(graded, rows))
    assert "verdict_math_verify" in graded[0]
    assert "equal=1 different=1 timeout=1 unparsable=1" in result.stdout and "pairs/s" in result.stdout
    assert "pairs disagree" in result.stdout
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("bad_line, message", [
    (b"{not json", "not valid JSON"),
    (b'{"prediction": "1"}', "missing field(s) reference"),
    (b'{"prediction": "caf\xe9", "reference": "1"}', "not valid UTF-8 (byte 0xe9"),  # Latin-1, not UTF-8
    (b'{"prediction": ["1", "2"], "reference": "1"}', "`prediction` must be a string or null, got list"),
    (b'{"prediction": "1", "reference": null}', "`reference` must be a string, got null"),
])
def test_cli_names_file_and_line_of_bad_input(tmp_path, bad_line, message):
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    pairs.write_bytes(b'{"prediction": "1", "reference": "1"}\n\n' + bad_line + b"\n")
    result = cli(str(pairs), "--out", str(out), module="cft.answers", outputs=tmp_path, cache=tmp_path,
                 timeout=120)
    assert result.returncode == 2
    assert f"{pairs}:3: {message}" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
