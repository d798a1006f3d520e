"""The paper's CFT variants (v4 Tables 9-11): the AceMath SFT loader on a local file of the hub's
schema, CFT-Short's length rule, CFT mixed with another run's SFT records, the two-stage run's
reference to its first stage, and each table's experiment composing."""
from __future__ import annotations

import json

import pytest

from cft.datasets import load_records
from cft.io import DataError, write_jsonl
from cft.paths import RunPaths
from cft.train.stage import training_rows
from cft.validation import ConfigError, validate

# AceMath-Instruct-Training-Data's columns (nvidia/AceMath-Instruct-Training-Data, math_sft split).
ACEMATH_ROWS = [
    {"messages": [{"role": "user", "content": "What is $2+3$?"}],
     "answer": "We add: $2+3=5$.\n\nThe answer is $\\boxed{5}$."},
    {"messages": [{"role": "user", "content": "Compute $7\\cdot 6$."}],
     "answer": "Multiplying, $7\\cdot 6 = 42$. So the answer is $\\boxed{42}$."},
    {"messages": [{"role": "user", "content": "Solve $x^2=9$ for $x>0$."}], "answer": "$x=\\boxed{3}$."},
]


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_acemath_rows_become_question_response_records(compose, tmp_path):
    cfg = compose(["dataset=acemath", f"dataset.path={write_parquet(tmp_path / 'math_sft.parquet', ACEMATH_ROWS)}"])
    assert (cfg.dataset.hf_path, cfg.dataset.split) == ("nvidia/AceMath-Instruct-Training-Data", "math_sft")
    records = list(load_records(cfg.dataset))
    assert [r.question for r in records] == [r["messages"][0]["content"] for r in ACEMATH_ROWS]
    assert [r.noisy_response for r in records] == [r["answer"] for r in ACEMATH_ROWS]
    assert {r.noisy_source for r in records} == {"acemath:math_sft"}
    assert {r.response_correct for r in records} == {"unknown"} and records[0].reference_answer is None
    assert len({r.id for r in records}) == 3


@pytest.mark.parametrize("row, error", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "q2"}], "answer": "x"}, "must be one user turn"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "answer": "x"},
     "has a system turn"),
    ({"messages": [{"role": "user", "content": "q"}], "answer": ""}, "empty string field 'answer'"),
    ({"messages": "q", "answer": "x"}, "is not a list"),
])
def test_an_acemath_row_that_is_no_single_pair_is_an_error_naming_it(compose, tmp_path, row, error):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ACEMATH_ROWS[:1] + [row]))
    with pytest.raises(DataError, match=f"{path}: row 2: .*{error}"):
        list(load_records(compose(["dataset=acemath", f"dataset.path={path}"]).dataset))


CRITIQUE_ROWS = [  # (question, response, critique): critiques shorter and longer than their response
    ("What is 2+3?", "2+3 = 5, so the answer is 5.", "Correct. Conclusion: right [END]"),
    ("What is 7*6?", "7*6 = 48.", "The product 7*6 is 42, not 48: the multiplication is wrong, so the final "
                                  "answer 48 is wrong. Conclusion: wrong [END]"),
    ("Solve x^2 = 9, x > 0.", "x = 3 because 3*3 = 9 and 3 > 0; the negative root is excluded.",
     "Right. Conclusion: right [END]"),
    ("What is 10/4?", "2", "10/4 = 2.5; the response drops the fraction. Conclusion: wrong [END]"),
]


def write_critiques(paths: RunPaths) -> None:
    write_jsonl(paths.critiques, [{"id": f"c{i}", "question": q, "noisy_response": r, "critique": c}
                                  for i, (q, r, c) in enumerate(CRITIQUE_ROWS)])


def test_cft_short_keeps_critiques_no_longer_than_their_response(compose, tiny_tokenizer, capsys):
    def n_tokens(text):
        return len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])

    cfg = compose(["method=cft"])
    paths = RunPaths.of(cfg.run_dir)
    write_critiques(paths)
    cft = list(training_rows(cfg, paths, tiny_tokenizer))
    short = list(training_rows(compose(["method=cft-short"]), paths, tiny_tokenizer))
    by_id = {f"c{i}": (r, c) for i, (_, r, c) in enumerate(CRITIQUE_ROWS)}
    assert [ex["id"] for ex in short] == [i for i, (r, c) in by_id.items() if n_tokens(c) <= n_tokens(r)]
    assert 0 < len(short) < len(cft) == 4
    assert max(n_tokens(ex["target"]) for ex in short) < max(n_tokens(ex["target"]) for ex in cft)
    assert f"kept {len(short)} of 4 critiques" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="method.max_target_ratio=1.0 keeps critiques by their length: .*'response'"):
        validate(compose(["method=sft", "method.max_target_ratio=1.0"]))


def test_cft_mixed_with_another_runs_sft_records(compose, tmp_path, tiny_tokenizer):
    """The Table 9 mix: the critiques plus SFT pairs drawn from another run's records (AceMath)."""
    ace = compose(["dataset=acemath", f"dataset.path={write_parquet(tmp_path / 'a.parquet', ACEMATH_ROWS)}"],
                  run_dir=tmp_path / "acemath")
    acemath_records = RunPaths.of(ace.run_dir).records
    write_jsonl(acemath_records, [r.to_dict() for r in load_records(ace.dataset)])
    cfg = validate(compose(["method=cft-sft", "method.sft_ratio=0.4", f"method.sft_records={acemath_records}",
                            "stages=[train]"]))
    paths = RunPaths.of(cfg.run_dir)
    write_critiques(paths)
    rows = list(training_rows(cfg, paths, tiny_tokenizer))
    sft = [ex for ex in rows if ex["id"].startswith("sft:")]
    assert len(rows) == 4 + 3 and {ex["id"] for ex in sft} == {f"sft:acemath-{i}" for i in range(3)}
    assert sorted(ex["target"] for ex in sft) == sorted(r["answer"] for r in ACEMATH_ROWS)
    with pytest.raises(ConfigError, match="method.sft_records=.*: file not found"):
        validate(compose(["method=cft-sft", f"method.sft_records={tmp_path}/none.jsonl", "stages=[train]"]))
    with pytest.raises(ConfigError, match="is read only for method.sft_ratio > 0"):
        validate(compose(["method=cft", f"method.sft_records={acemath_records}"]))


def test_two_stage_refuses_a_missing_or_unfinished_first_stage(compose, tmp_path):
    from omegaconf import OmegaConf

    from cft.pipeline import run

    cfg = compose(["+experiment=table9", "+experiment/table9=two-stage"])
    spec = "table2 model=qwen2.5-math-7b method=cft seed=42"
    assert cfg.model.from_run == spec
    with pytest.raises(ConfigError, match=f"model.from_run='{spec}' must name exactly one finished run; found no run"):
        run(cfg)
    assert not RunPaths.of(cfg.run_dir).root.exists()  # refused before any work
    # Table 2's CFT cell, started but never trained.
    first = RunPaths.of(tmp_path / "outputs" / "multirun" / "table2" / "7_method=cft,model=qwen2.5-math-7b,seed=42")
    first.root.mkdir(parents=True)
    OmegaConf.save(compose(["model=qwen2.5-math-7b", "method=cft", "seed=42"]), first.resolved_config)
    first.run_info.write_text("{}")
    with pytest.raises(ConfigError, match=f"model.from_run='{spec}': {first.root} has no trained weights"):
        run(cfg)
    assert not RunPaths.of(cfg.run_dir).root.exists()


@pytest.mark.parametrize("overrides", [
    ["+experiment=table9", "+experiment/table9=mix"], ["+experiment=table9", "+experiment/table9=two-stage"],
    ["+experiment=table9", "+experiment/table9=acemath-sft"], ["+experiment=table9-acemath-data"],
    ["+experiment=table10"], ["+experiment=table11"], ["+experiment=table11", "eval.protocol=self-critique",
                                                         "eval.temperature=0.3"],
])
def test_each_table_composes(compose, overrides):
    cfg = compose(overrides)
    assert cfg.model.name == "qwen2.5-math-7b" or cfg.dataset.name == "acemath"
    if "+experiment=table11" in overrides:
        assert list(cfg.eval.benchmarks) == ["math", "minerva_math"] and cfg.eval.self_critique_rounds == 8
        assert cfg.method.target == "none" and cfg.model.from_run == "table2 model=qwen2.5-math-7b method=cft seed=42"
    if "+experiment/table9=mix" in overrides:
        assert cfg.method.sft_ratio == 0.5
        assert cfg.method.sft_records.endswith("runs/acemath-math-sft-50k/data/records.jsonl")
    if "+experiment=table10" in overrides:
        assert cfg.method.name == "cft-short" and cfg.method.max_target_ratio == 1.0
