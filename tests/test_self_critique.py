"""eval.protocol=self-critique (cft/eval/self_critique.py): the paper's two-stage self-critique,
end to end on the tiny model, and its stopping rule with a model whose verdicts are known."""
from __future__ import annotations

import pytest

from cft.eval.sampling import Sampling
from cft.eval.stage import run as evaluate_stage
from cft.generation import Completion, Generator
from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.templates import CFT_INSTRUCTION
from cft.validation import ConfigError, validate

OVERRIDES = ["stages=[eval]", "eval.benchmarks=[math-500]", "eval.limit=2", "eval.critic=false",
             "eval.protocol=self-critique", "eval.self_critique_rounds=2", "eval.temperature=0.7",
             "eval.max_new_tokens=8", "eval.self_critique_max_new_tokens=6"]


@pytest.fixture(scope="module")
def self_critiqued(cache_dir, tmp_path_factory):
    """One self-critique eval of the (random) tiny model: 2 MATH-500 problems, up to 2 tries."""
    from conftest import make_compose

    root = tmp_path_factory.mktemp("self-critique")
    cfg = validate(make_compose(cache_dir, root / "run", root / "outputs")(OVERRIDES))
    evaluate_stage(cfg, RunPaths.of(cfg.run_dir))  # the eval stage, in this process (the pipeline's child)
    return cfg, RunPaths.of(cfg.run_dir)


def test_every_attempt_is_kept_and_the_scores_add_up(self_critiqued):
    cfg, paths = self_critiqued
    rows = read_jsonl(paths.eval_samples("math-500"))
    direct = {r["key"]: r["samples"][0]["completion"] for r in read_jsonl(paths.eval_dir / "math-500.progress.jsonl")}
    assert len(rows) == 2
    for row in rows:
        sc = row["self_critique"]
        attempts = sc["attempts"]
        assert [a["attempt"] for a in attempts] == list(range(1, sc["n_attempts"] + 1))
        assert 1 <= sc["n_attempts"] <= 2
        # Attempt 1 is the stage's own direct answer; a retry is a fresh sample of the same prompt.
        assert attempts[0]["completion"] in direct.values()
        if sc["n_attempts"] == 2:
            assert attempts[0]["critique_verdict"] != "right" and sc["stopped"] == "max_rounds"
            assert attempts[1]["completion"] != attempts[0]["completion"]
        for a in attempts:
            assert a["critique"] is not None and a["critique_verdict"] in ("right", "wrong", None)
            assert a["critique_tokens"] <= 6 and a["tokens"] <= 8
        # The row reports the returned (last) solution, graded as the stage grades.
        assert row["completion"] == attempts[-1]["completion"] and row["correct"] == attempts[-1]["correct"]
        assert sc["correct_before"] == attempts[0]["correct"]
    results = read_json(paths.eval_results)
    bench = results["benchmarks"]["math-500"]
    sc = bench["self_critique"]
    assert bench["accuracy"] == sc["accuracy_after"] == 50.0 * sum(r["correct"] for r in rows)
    assert sc["accuracy_before"] == sc["direct_accuracy"] == 50.0 * sum(r["self_critique"]["correct_before"]
                                                                       for r in rows)
    assert sc["accuracy_after"] - sc["accuracy_before"] == 50.0 * (sc["wrong_to_right"] - sc["right_to_wrong"])
    assert sum(sc["stopped"].values()) == 2
    assert results["protocol"]["name"] == "self-critique"
    assert results["self_critique"] == {"variant": "two-stage (paper v4 App. A.4)", "rounds": 2,
                                        "temperature": 0.7, "critique_max_new_tokens": 6}


def test_a_rerun_generates_nothing_and_writes_the_same_rows(self_critiqued):
    cfg, paths = self_critiqued
    store = paths.eval_dir / "math-500.self-critique.progress.jsonl"
    stored, before = store.read_text(), read_jsonl(paths.eval_samples("math-500"))
    evaluate_stage(cfg, paths)
    assert store.read_text() == stored
    assert read_jsonl(paths.eval_samples("math-500")) == before


class ScriptedModel(Generator):
    """A model whose critiques and answers are known (the rest of the loop is the real one): it
    calls the first problem's answer right and every other answer wrong, and answers every
    question with its reference. It records the prompts it was given."""

    def __init__(self, tokenizer, first_question: str, references: dict[str, str]):
        self.tokenizer, self.first, self.references, self.prompts = tokenizer, first_question, references, []

    def sample(self, prompts, max_new_tokens, n=1, temperature=0.0, top_p=1.0, seeds=None):
        for i, ids in enumerate(prompts):
            text = self.tokenizer.decode(ids)
            self.prompts.append(text)
            if CFT_INSTRUCTION in text:
                verdict = "right" if self.first in text else "wrong"
                yield i, [Completion(f"The solution checks out. Conclusion: {verdict}", "stop", 5)]
            else:
                ref = next(r for q, r in self.references.items() if q in text)
                yield i, [Completion(f"The answer is \\boxed{{{ref}}}.", "stop", 6)]


def test_a_right_verdict_stops_and_a_wrong_one_answers_again(compose, tiny_source, tiny_tokenizer):
    from cft.eval.self_critique import self_critique
    from cft.eval.stage import close_generator, evaluate

    cfg = compose(OVERRIDES)
    out = RunPaths.of(cfg.run_dir).eval_dir
    try:
        direct = evaluate(cfg, str(tiny_source), out)  # attempt 1: the tiny model's own (wrong) answers
    finally:
        close_generator()
    rows = read_jsonl(out / "math-500.jsonl")
    assert not any(r["correct"] for r in rows)
    model = ScriptedModel(tiny_tokenizer, rows[0]["question"], {r["question"]: r["reference"] for r in rows})
    results = self_critique(cfg, lambda: model, str(tiny_source), out, direct)

    first, second = (r["self_critique"] for r in read_jsonl(out / "math-500.jsonl"))
    assert first["stopped"] == "right" and first["n_attempts"] == 1 and not first["attempts"][0]["correct"]
    assert second["stopped"] == "max_rounds" and second["n_attempts"] == 2
    assert [a["critique_verdict"] for a in second["attempts"]] == ["wrong", "wrong"]
    assert second["attempts"][1]["correct"]  # the fresh answer, kept as the last one
    # Nobody asked the model to answer the first problem again.
    asked_again = [p for p in model.prompts if CFT_INSTRUCTION not in p]
    assert len(asked_again) == 1 and rows[1]["question"] in asked_again[0]
    sc = results["math-500"]["self_critique"]
    assert (sc["accuracy_before"], sc["accuracy_after"], sc["wrong_to_right"], sc["right_to_wrong"]) == (0, 50, 1, 0)
    assert sc["critique_verdicts"] == {"right": 1, "wrong": 2}
    assert results["math-500"]["accuracy"] == 50.0


def test_the_protocol_is_checked_before_any_work(compose):
    validate(compose(OVERRIDES))
    with pytest.raises(ConfigError, match="eval.self_critique_rounds=2 at eval.temperature=0"):
        validate(compose(OVERRIDES + ["eval.temperature=0"]))
    validate(compose(OVERRIDES + ["eval.temperature=0", "eval.self_critique_rounds=1"]))
    with pytest.raises(ConfigError, match="eval.n=4: eval.protocol=self-critique follows one solution"):
        validate(compose(OVERRIDES + ["eval.n=4"]))
    with pytest.raises(ConfigError, match="eval.self_critique_rounds=0"):
        validate(compose(OVERRIDES + ["eval.self_critique_rounds=0"]))
    assert Sampling.of(compose(OVERRIDES).eval).temperature == 0.7
