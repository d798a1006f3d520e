"""Sampling evaluation's scores and votes, without a model: pass@k against brute force, maj@k
on hand cases (equivalent forms, ties, no answers), the protocol's checks and generation keys."""
from __future__ import annotations

import itertools
import math
import os
import time
from fractions import Fraction

import pytest

from cft.eval.metrics import benchmark_metrics, macro_average, majority, pass_at_k
from cft.eval.sampling import Sampling, generation_key, model_identity
from cft.eval.votes import answer_classes, form_key


@pytest.fixture(scope="module")
def grader():
    from cft.answers import Grader

    with Grader(timeout=30.0, workers=1) as g:
        yield g


def test_pass_at_k_is_the_share_of_k_subsets_with_a_right_sample():
    for n in range(1, 9):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_where_binomials_are_huge():
    for n, c, k in [(1000, 1, 500), (1024, 3, 64), (4096, 100, 1000), (64, 0, 64)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


@pytest.mark.parametrize("classes,k,winner", [
    ([0, 1, 1, 0], 4, 0),        # 2-2 tie: the class seen first wins
    ([0, 1, 1, 0], 3, 1),        # the first 3 samples only: class 1 has 2 votes
    ([0, 1, 1, 0], 1, 0),        # maj@1 is sample 0
    ([1, 0, 0, 2, 2, 2], 5, 1),  # 2-2 tie between classes 0 and 2 in the first 5: 0 came first (index 1)
    ([None, 3, None], 1, None),  # no answer does not vote: nothing to vote for
    ([None, 3, None], 3, 1),
])
def test_majority_ties_go_to_the_class_seen_first(classes, k, winner):
    assert majority(classes, k) == winner


def test_equivalent_forms_are_one_answer_and_the_checker_merges_the_rest(grader):
    answers = ["1/2", "0.5", "\\frac{1}{2}", "0.3333333", "\\dfrac{1}{3}", None, "7", "x = 7", "7.0",
               "\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", "(x+1)^2", "x^2+2x+1"]
    classes, timeouts = answer_classes([answers, ["5"]], grader)
    assert classes == [[0, 0, 0, 1, 1, None, 2, 2, 2, 3, 3, 4, 4], [0]] and timeouts == 0
    # canonical forms alone: exact numbers and normalized text; the checker merged 1/3's forms
    assert form_key("0.5") == form_key("\\frac{1}{2}") == form_key("$1/2$")
    assert form_key("0.3333333") != form_key("1/3")


def test_canonical_forms_of_hostile_answers_are_cheap():
    """Canonical forms run outside the grader's timeout: huge numbers and long answers stay strings."""
    hostile = ["9" * 50_000, "\\frac{" + "7" * 5_000 + "}{3}", "\\boxed{" * 100_000, "1" * 60 + "/" + "3" * 60]
    start = time.perf_counter()
    keys = [form_key(a) for a in hostile]
    assert [k[0] for k in keys] == ["raw", "raw", "raw", "form"] and time.perf_counter() - start < 1.0
    assert keys[0][1] is hostile[0]  # the answer itself, not a parse of it


def test_maj_at_k_and_avg_on_hand_cases():
    # problem 1: three samples say 1/2 (right), one says 3; problem 2: a 2-2 tie, the first
    # class (wrong) wins maj@4 while maj@3 goes to the right one.
    correct = [[True, False, True, True], [False, True, True, False]]
    classes = [[0, 1, 0, 0], [0, 1, 1, 0]]
    finish = [["stop", "length", "stop", "stop"], ["stop"] * 4]
    m = benchmark_metrics(correct, classes, finish, ks=[1, 2, 3, 4, 8])
    assert m["acc"] == 50.0 and m["avg@4"] == 62.5
    assert (m["maj@1"], m["maj@2"], m["maj@3"], m["maj@4"]) == (50.0, 50.0, 100.0, 50.0)
    assert m["pass@1"] == pytest.approx(62.5) and m["pass@4"] == 100.0 and "pass@8" not in m
    assert m["cut_by_max_tokens"] == 12.5
    macro = macro_average({"a": {**m, "n": 2, "timeouts": 1}, "b": {**m, "acc": 0.0, "n": 3, "timeouts": 0}})
    assert macro["acc"] == 25.0 and macro["n"] == 5 and macro["timeouts"] == 1


class _Eval:
    def __init__(self, **kw):
        self.n, self.temperature, self.top_p, self.seed, self.ks = 1, 0.0, 1.0, 0, [1, 2, 4]
        self.__dict__.update(kw)


@pytest.mark.parametrize("kw,key", [({"n": 4}, "eval.temperature"), ({"n": 0}, "eval.n"),
                                    ({"top_p": 0.0, "temperature": 0.6}, "eval.top_p"),
                                    ({"ks": [0, 2]}, "eval.ks")])
def test_sampling_settings_that_make_no_sense_name_their_key(kw, key):
    with pytest.raises(ValueError, match=key):
        Sampling.of(_Eval(**kw))


def test_problem_seeds_are_per_problem_and_fixed():
    s = Sampling.of(_Eval(n=4, temperature=0.6, seed=3))
    assert s.problem_seed("aime24", 0) == Sampling.of(_Eval(n=4, temperature=0.6, seed=3)).problem_seed("aime24", 0)
    seeds = {s.problem_seed(b, i) for b in ("aime24", "amc23") for i in range(30)}
    assert len(seeds) == 60 and s.problem_seed("aime24", 0) != Sampling.of(_Eval(seed=4)).problem_seed("aime24", 0)
    assert s.to_dict()["ks"] == [1, 2, 4] and Sampling.of(_Eval()).to_dict()["ks"] == [1]


def test_generation_key_changes_with_each_setting_and_the_weights(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 10)
    settings = {"model": model_identity(str(tmp_path)), "max_new_tokens": 16, "n": 1}
    key = generation_key(settings, "prompt", None)
    assert key == generation_key(dict(settings), "prompt", None)
    for changed in ({"max_new_tokens": 64}, {"n": 4}, {"backend": "vllm"}):
        assert generation_key({**settings, **changed}, "prompt", None) != key
    assert generation_key(settings, "other prompt", None) != key and generation_key(settings, "prompt", 7) != key
    os.utime(weights, ns=(1, 1))  # retrained in place: same size, another mtime
    assert generation_key({**settings, "model": model_identity(str(tmp_path))}, "prompt", None) != key


def test_report_tables_say_which_protocol_scored_the_runs(tmp_path):
    import json

    import yaml

    from cft.report.tables import build_table, collect_runs, to_latex, to_markdown

    for num, (preset, sampling) in enumerate([("paper", {}), ("sampled", {"n": 16, "temperature": 0.6, "top_p": 0.95})]):
        run_dir = tmp_path / f"{num}_eval={preset}"
        run_dir.mkdir()
        config = {"model": {"name": "tiny"}, "method": {"name": "cft"}, "eval": {"name": preset, **sampling}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / "run_info.json").write_text("{}")
        (run_dir / "results.json").write_text(json.dumps({"accuracy": {"aime24": 10.0 + num}, "average": 10.0 + num}))
    table = build_table(collect_runs(tmp_path))
    md = to_markdown(table)
    assert "eval" in table.key_columns  # the two rows are told apart by their preset
    assert md.rstrip().endswith("Scores: eval=paper: greedy, accuracy of one completion; "
                                "eval=sampled: n=16, T=0.6, top_p=0.95, scores are avg@16")
    assert "% Scores: eval=sampled: n=16, T=0.6, top_p=0.95, scores are avg@16" in to_latex(table)
