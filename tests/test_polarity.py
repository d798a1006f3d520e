"""The polarity ablation: train on a fixed number of critiques with a chosen share of critiques of
wrong responses (method.wrong_fraction), and read the critic's accuracy on correct and on
incorrect candidates apart."""
from __future__ import annotations

from collections import Counter

import pytest

from cft.eval.critic import critic_metrics
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from cft.records import response_polarity
from cft.train.stage import polarity_sample
from cft.validation import ConfigError, validate
from test_sweeps import grid_cells


def _rows(n_right: int, n_wrong: int, n_unknown: int = 0) -> list[dict]:
    truth = ["right"] * n_right + ["wrong"] * n_wrong + ["unknown"] * n_unknown
    return [{"id": f"r{i}", "response_correct": t, "teacher_verdict": None} for i, t in enumerate(truth)]


def test_a_response_is_right_or_wrong_by_the_checker_else_by_its_critique():
    assert response_polarity({"response_correct": "wrong", "teacher_verdict": "right"}) == "wrong"
    assert response_polarity({"response_correct": "unknown", "teacher_verdict": "wrong"}) == "wrong"
    assert response_polarity({"response_correct": "unknown", "extra": {"released_verdict": "right"}}) == "right"
    assert response_polarity({"response_correct": "unknown", "teacher_verdict": None}) == "unknown"


@pytest.mark.parametrize("fraction,wrong", [(0.0, 0), (0.25, 10), (0.5, 20), (0.75, 30), (1.0, 40)])
def test_every_share_draws_the_same_number_of_critiques(fraction, wrong):
    rows = _rows(n_right=60, n_wrong=40, n_unknown=7)
    picked = polarity_sample(rows, fraction, None, seed=1)  # size: the rarer polarity's 40
    assert Counter(r["polarity"] for r in picked) == Counter({"wrong": wrong, "right": 40 - wrong}) - Counter()
    assert all(r["polarity"] == response_polarity(r) for r in picked)  # never a row of unknown polarity
    assert picked == polarity_sample(rows, fraction, None, seed=1)  # reproducible
    assert picked != polarity_sample(rows, fraction, None, seed=2) or fraction in (0.0, 1.0)


def test_a_larger_share_keeps_the_wrong_critiques_of_a_smaller_one():
    rows = _rows(n_right=50, n_wrong=50)
    wrong_at = {f: {r["id"] for r in polarity_sample(rows, f, 40, seed=3) if r["polarity"] == "wrong"}
                for f in (0.25, 0.5, 0.75)}
    assert wrong_at[0.25] < wrong_at[0.5] < wrong_at[0.75]


def test_data_that_cannot_supply_the_mix_fail_naming_the_keys():
    with pytest.raises(ValueError, match=r"method.wrong_fraction=0.75 with method.polarity_size=40: needs 30 "
                                         r"critiques of wrong and 10 of right responses, the data have 20 and 60 "
                                         r"\(3 of unknown polarity\)"):
        polarity_sample(_rows(n_right=60, n_wrong=20, n_unknown=3), 0.75, 40, seed=0)


def test_out_of_range_shares_fail_before_any_work(compose):
    with pytest.raises(ConfigError, match=r"method.wrong_fraction=1.5 must be in \[0, 1\]"):
        validate(compose(["method.wrong_fraction=1.5"]))
    with pytest.raises(ConfigError, match="method.wrong_fraction chooses critiques .*method.target='response' is not 'critique'"):
        validate(compose(["method=sft", "method.wrong_fraction=0.5"]))


def test_the_experiment_sweeps_five_shares_over_three_seeds():
    cells = grid_cells("polarity-ablation")
    assert len(cells) == 15
    assert sorted({c[0] for c in cells}) == [f"method.wrong_fraction={f}" for f in ("0.0", "0.25", "0.5", "0.75", "1.0")]
    assert sorted({c[1] for c in cells}) == ["seed=42", "seed=43", "seed=44"]


def test_critic_accuracy_on_correct_and_incorrect_candidates_and_their_f1():
    rows = ([{"truth": "right", "verdict": "right"}] * 3 + [{"truth": "right", "verdict": "wrong"}]
            + [{"truth": "wrong", "verdict": "wrong"}] * 1 + [{"truth": "wrong", "verdict": None}])
    m = critic_metrics(rows)
    assert (m["n_correct"], m["accuracy_on_correct"], m["n_incorrect"], m["accuracy_on_incorrect"]) == (4, 75.0, 2, 50.0)
    assert m["f1"] == pytest.approx(60.0)  # 2 * 75 * 50 / 125
    always_wrong = critic_metrics([{"truth": t, "verdict": "wrong"} for t in ("right", "wrong")])
    assert (always_wrong["accuracy"], always_wrong["f1"]) == (50.0, 0.0)


def test_a_cpu_cell_runs_end_to_end(compose):
    """One cell of the experiment, shrunk to the tiny model on CHAMP with the reference teacher."""
    cfg = compose(["+experiment=polarity-ablation", "model=tiny", "dataset=champ", "teacher=reference", "eval=quick",
                   "method.wrong_fraction=0.75", "method.polarity_size=16", "method.max_steps=2", "eval.limit=1",
                   "eval.critic_limit=2", "eval.max_new_tokens=8"])
    out = run(cfg)
    paths = RunPaths.of(cfg.run_dir)
    assert (out["train"]["n_examples"], out["train"]["n_wrong_critiques"], out["train"]["n_right_critiques"]) == (16, 12, 4)
    assert Counter(e["polarity"] for e in read_jsonl(paths.train_examples)) == {"wrong": 12, "right": 4}
    critic = read_json(paths.critic_metrics)
    assert (critic["n_correct"], critic["n_incorrect"]) == (1, 1) and "f1" in critic
    assert read_json(paths.eval_results)["protocol"]["name"] == "zero-shot"
