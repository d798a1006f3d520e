"""The paper's training data as the official run saw it, through the pipeline in process:
released WebInstruct-CFT rows rendered verbatim, every released critique trained on, and the
extraction rule of each evaluated answer on record."""
from __future__ import annotations

import json

from cft.io import read_json, read_jsonl
from cft.paths import RunPaths
from cft.pipeline import run
from test_data import WEBINSTRUCT_ROWS

INSTRUCTION = WEBINSTRUCT_ROWS[0]["instruction"]
# Released critiques without a parsable verdict exist; the official run trained on them.
ROWS = [*WEBINSTRUCT_ROWS,
        {"instruction": INSTRUCTION, "input": "Question:\nIs 7 prime?\n\nSolution:\nYes.\n",
         "output": "The solution is correct, 7 has no divisor but 1 and itself."}]


def _released_run(compose, tmp_path, *overrides):
    data = tmp_path / "wi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = compose(["dataset=webinstruct-cft-4k", f"dataset.path={data}", "teacher=released",
                   "stages=[data,critique]", *overrides], run_dir=tmp_path / "run")
    run(cfg)
    return RunPaths.of(cfg.run_dir)


def test_every_released_critique_is_trained_on_and_the_unverdicted_are_counted(compose, tmp_path):
    from cft.templates import render
    from cft.train.format import example

    paths = _released_run(compose, tmp_path)
    kept = read_jsonl(paths.critiques)
    assert [k["critique"] for k in kept] == [r["output"] for r in ROWS]
    assert [k["teacher_verdict"] for k in kept] == ["wrong", "right", None]
    summary = read_json(paths.critique_summary)
    assert summary["n_kept"] == 3 and summary["n_kept_without_verdict"] == 1
    prompt, _ = render(example(kept[0], "critique"), "qwen")
    assert prompt.endswith("<|im_start|>user\n" + INSTRUCTION + "\n" + ROWS[0]["input"]
                           + "<|im_end|>\n<|im_start|>assistant\n")


def test_require_verdict_filters_released_critiques(compose, tmp_path):
    paths = _released_run(compose, tmp_path, "teacher.require_verdict=true")
    assert len(read_jsonl(paths.critiques)) == 2
    assert [r["reason"] for r in read_jsonl(paths.rejects)] == ["no verdict line"]


def test_eval_rows_name_their_extraction_rule_and_results_count_them(compose, tmp_path):
    cfg = compose(["stages=[eval]", "eval.limit=4", "eval.max_new_tokens=8", "eval.critic=false"],
                  run_dir=tmp_path / "run")
    run(cfg)
    paths = RunPaths.of(cfg.run_dir)
    rows = read_jsonl(paths.eval_samples("math-500"))
    rules = {"minerva", "boxed", "answer_is", "final_answer_is", "gsm8k_hash", "last_number", "none"}
    assert len(rows) == 4 and all(r["extraction_rule"] in rules for r in rows)
    counted = read_json(paths.eval_results)["benchmarks"]["math-500"]["extraction_rules"]
    assert sum(counted.values()) == 4
    assert counted == {rule: sum(r["extraction_rule"] == rule for r in rows) for rule in counted}
