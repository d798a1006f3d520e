"""GPQA and MMLU-Pro from a user's copy in the official format: the prompt the paper's evaluation
built, the letter it read out of a completion, and a clear error for a file of another shape.

The files here are a few rows written in the real layouts (GPQA's csv columns, MMLU-Pro's HF
parquet schema), with made-up questions: the real sets are gated or large and do not ship.
"""
from __future__ import annotations

import csv
import json
import random
import re

import pytest

from cft.answers import Grader, Verdict, check, extract_with_rule
from cft.benchmarks import get_benchmark
from cft.eval.sampling import Sampling
from cft.eval.stage import score
from cft.io import DataError
from cft.templates import EvalProtocol
from cft.validation import ConfigError, validate

GPQA_HEADER = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
               "Incorrect Answer 3", "Explanation", "Subdomain", "Record ID", "High-level domain"]
GPQA_ROWS = [
    {"Question": "Which particle mediates the electromagnetic force?", "Correct Answer": "Photon",
     "Incorrect Answer 1": "Gluon", "Incorrect Answer 2": "W boson", "Incorrect Answer 3": "Graviton"},
    {"Question": "A reaction mixture is heated.\nWhich product dominates at equilibrium, \"X\" or Y?\n",
     "Correct Answer": "X, by 3:1", "Incorrect Answer 1": "Y", "Incorrect Answer 2": "Neither",
     "Incorrect Answer 3": "Both equally"},
    {"Question": "What is the spin of an electron?", "Correct Answer": "1/2", "Incorrect Answer 1": "1",
     "Incorrect Answer 2": "0", "Incorrect Answer 3": "3/2"},
]
MMLU_PRO_ROWS = [
    {"question_id": 70, "question": "Find the characteristic of the ring 2Z.",
     "options": ["0", "30", "3", "10", "12", "50", "2", "100", "20", "5"], "answer": "A", "answer_index": 0,
     "cot_content": "", "category": "math", "src": "cot_lib-abstract_algebra"},
    {"question_id": 71, "question": "Which organ filters blood?", "options": ["Heart", "Kidney", "Lung", "N/A"],
     "answer": "B", "answer_index": 1, "cot_content": "", "category": "health", "src": "ori_mmlu-anatomy"},
]
QWEN = EvalProtocol("zero-shot", "qwen25-math-cot")


def _gpqa_csv(path, rows=GPQA_ROWS, header=GPQA_HEADER):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"Record ID": f"rec{i}", "High-level domain": "Physics", **row})
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gpqa_is_prompted_as_the_papers_evaluation_prompted_it(tmp_path):
    bench = get_benchmark(f"gpqa:{_gpqa_csv(tmp_path / 'gpqa_diamond.csv')}")
    items = bench.load("/nowhere")
    # the options in GPQA's seeded order: random.seed(0), then one shuffle per row in file order
    random.seed(0)
    orders = []
    for row in GPQA_ROWS:
        choices = [row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"], row["Correct Answer"]]
        random.shuffle(choices)
        orders.append(choices)
    assert [it["choices"] for it in items] == orders
    assert [it["reference"] for it in items] == ["ABCD"[o.index(r["Correct Answer"])] for o, r in zip(orders, GPQA_ROWS)]
    a, b, c, d = orders[0]
    assert QWEN.prompt(items[0]["question"], "gpqa") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Which particle mediates the electromagnetic force?\n"
        f"Answer Choices: (A) {a} (B) {b} (C) {c} (D) {d}<|im_end|>\n<|im_start|>assistant\n")
    # a question that ends in a newline gets no second one; quoted commas and newlines survive
    assert items[1]["question"].startswith("A reaction mixture is heated.\nWhich product dominates at equilibrium, "
                                           "\"X\" or Y?\nAnswer Choices: (A) ")
    # the same rows as JSON lines (as the CFT repository keeps them) are the same benchmark
    assert get_benchmark(f"gpqa_diamond={_jsonl(tmp_path / 'gpqa.jsonl', GPQA_ROWS)}").load("/x") == items


def test_mmlu_pro_is_prompted_as_its_official_zero_shot_cot(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(MMLU_PRO_ROWS), tmp_path / "test-00000-of-00001.parquet")
    items = get_benchmark(f"MMLU-Pro:{tmp_path / 'test-00000-of-00001.parquet'}").load("/x")
    assert [it["reference"] for it in items] == ["A", "B"]
    assert QWEN.prompt(items[1]["question"], "mmlu_pro") == (
        "<|im_start|>system\nPlease reason step by step, and put your answer with \"the answer is (X)\" where X is "
        "the correct letter choice.<|im_end|>\n<|im_start|>user\nQuestion:\nWhich organ filters blood?\nOptions:\n"
        "A. Heart\nB. Kidney\nC. Lung\nAnswer: Let's think step by step.\n<|im_end|>\n<|im_start|>assistant\n")
    assert items[0]["question"].count("\n") == 14 and "J. 5\n" in items[0]["question"]
    # a directory in paths.benchmarks may hold it under the HF file name; JSON lines read the same
    (tmp_path / "mmlu_pro").mkdir()
    (tmp_path / "test-00000-of-00001.parquet").rename(tmp_path / "mmlu_pro" / "test-00000-of-00001.parquet")
    assert get_benchmark("mmlu_pro").load(tmp_path) == items
    assert get_benchmark(f"mmlu_pro:{_jsonl(tmp_path / 'rows.jsonl', MMLU_PRO_ROWS)}").load("/x") == items


# (completion, GPQA's letter) - what the CFT evaluation's answer_clean made of such outputs
GPQA_OUTPUTS = [
    ("The photon is the gauge boson of QED.\n\nTherefore, the answer is (C).", "C"),
    ("We compare the options... so the correct choice is \\boxed{B}", "B"),
    ("Answer: D", "D"),
    # upper-casing makes the article "a" a letter, as it did there
    ("Option B is right: the photon is a massless boson", "A"),
    # "the answer is" twice: cut at the first blank line, then the first letter after the trigger
    ("I think the answer is B.\n\nOn reflection the answer is D.", "B"),
    ("I cannot decide between these options.", None),
]
MMLU_PRO_OUTPUTS = [
    ("The characteristic of 2Z is 0 because ... The answer is (A).", ("A", "answer_is")),
    ("Step 1 ... the answer is C, and then the answer is (D)", ("C", "answer_is")),
    ("The kidney filters blood.\nAnswer: B", ("B", "answer_colon")),
    ("Answer: A then Answer: C\nAnswer: D", ("C", "answer_colon")),
    ("Hence option G is correct", ("G", "last_letter")),
    # the pronoun "I" is a standalone letter A-J, as it was there
    ("I am not sure.", ("I", "last_letter")),
    ("not sure, sorry.", (None, "none")),
]


@pytest.mark.parametrize("completion, letter", GPQA_OUTPUTS)
def test_gpqa_letters_are_read_as_the_papers_evaluation_read_them(completion, letter):
    assert extract_with_rule(completion, "gpqa") == (letter, "choice" if letter else "none")


@pytest.mark.parametrize("completion, expected", MMLU_PRO_OUTPUTS)
def test_mmlu_pro_letters_follow_its_three_official_rules(completion, expected):
    assert extract_with_rule(completion, "mmlu_pro") == expected


def _gpqa_official(text: str):
    """CritiqueFineTuning@44b83b8 tools/evaluate_gpqa/utils.py answer_clean('gpqa', triggers, text),
    written from its spec; None where it returns leftover text (never equal to a letter)."""
    triggers = ["The answer is:", "The answer is", "the answer is"]
    text = text.strip("\n")
    if any(text.count(t) > 1 for t in triggers):
        text = text.split("\n\n")[0]
    parts = re.split("|".join(triggers), text)
    flag, text = len(parts) > 1, parts[-1]
    text = text.strip("\n").rstrip(".").rstrip("/").strip(" ")
    letters = re.findall(r"\b(A|B|C|D)\b", text.upper())
    return (letters[0] if flag else letters[-1]) if letters else None


def _mmlu_pro_official(text: str):
    """TIGER-AI-Lab/MMLU-Pro evaluate_from_local.py extract_answer / extract_again / extract_final."""
    for pattern, flags in ((r"answer is \(?([A-J])\)?", 0), (r".*[aA]nswer:\s*([A-J])", 0)):
        m = re.search(pattern, text, flags)
        if m:
            return m.group(1)
    m = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
    return m.group(0) if m else None


def test_the_one_pass_readers_agree_with_the_official_patterns_on_random_text():
    pieces = ["the answer is ", "The answer is:", "answer is (", "Answer:", "answer: ", "nswer:", "A", "B", "C",
              "D", "E", "J", "K", "a", "b ", "(", ")", ".", " ", "\n", "\n\n", "x", "/", "\\boxed{"]
    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 16)))
        assert extract_with_rule(text, "gpqa")[0] == _gpqa_official(text), text
        assert extract_with_rule(text, "mmlu_pro")[0] == _mmlu_pro_official(text), text


def test_a_letter_is_right_only_when_it_is_the_reference_and_scores_like_the_official_count(tmp_path):
    letters = "ABCDEFGHIJ"
    assert all((check(p, r) == Verdict.EQUAL) == (p == r) for p in letters for r in letters)
    items = get_benchmark(f"gpqa:{_gpqa_csv(tmp_path / 'g.csv')}").load("/x")
    picks = [it["reference"] for it in items[:2]] + ["ABCD".replace(items[2]["reference"], "")[0]]
    samples = [[{"completion": f"... The answer is ({p}).", "finish_reason": "stop", "tokens": 9}] for p in picks]
    grader = Grader(timeout=5, workers=1)
    try:
        rows, result = score("gpqa", items, [""] * 3, samples, grader, Sampling())
    finally:
        grader.close()
    assert [r["correct"] for r in rows] == [True, True, False] and result["accuracy"] == pytest.approx(200 / 3)


def test_each_benchmark_ends_a_completion_where_its_script_stopped():
    gpqa, mmlu = QWEN.for_benchmark("gpqa"), QWEN.for_benchmark("mmlu_pro")
    assert gpqa.finish("The answer is (B).\nProblem: next one") == ("The answer is (B).", True)
    assert mmlu.finish("so the answer is (C).\n\nQuestion: another") == ("so the answer is (C).", True)
    assert QWEN.for_benchmark("math") is QWEN


def test_a_file_of_another_shape_is_named_with_what_is_missing(tmp_path):
    no_column = _gpqa_csv(tmp_path / "a.csv", header=[h for h in GPQA_HEADER if h != "Incorrect Answer 3"])
    with pytest.raises(DataError, match=rf"{no_column}: not GPQA's format: no column 'Incorrect Answer 3'"):
        get_benchmark(f"gpqa:{no_column}").load("/x")
    empty = _gpqa_csv(tmp_path / "b.csv", rows=[GPQA_ROWS[0], {**GPQA_ROWS[2], "Correct Answer": " "}])
    with pytest.raises(DataError, match=r"b.csv: row 2 \(line 3\): column 'Correct Answer' is empty"):
        get_benchmark(f"gpqa:{empty}").load("/x")
    wrong = _jsonl(tmp_path / "m.jsonl", [MMLU_PRO_ROWS[0], {**MMLU_PRO_ROWS[1], "answer_index": 2}])
    with pytest.raises(DataError, match=r"m.jsonl:2: 'answer' 'B' and 'answer_index' 2 disagree"):
        get_benchmark(f"mmlu_pro:{wrong}").load("/x")
    no_options = _jsonl(tmp_path / "n.jsonl", [{k: v for k, v in MMLU_PRO_ROWS[0].items() if k != "options"}])
    with pytest.raises(DataError, match=r"not MMLU-Pro's format: no column 'options'"):
        get_benchmark(f"mmlu_pro:{no_options}").load("/x")


def test_a_bad_benchmark_file_fails_validation_before_any_work(compose, tmp_path):
    bad = _gpqa_csv(tmp_path / "gpqa.csv", header=[h for h in GPQA_HEADER if h != "Correct Answer"])
    with pytest.raises(ConfigError, match=rf"eval.benchmarks: {bad}: not GPQA's format: no column 'Correct Answer'"):
        validate(compose([f"eval.benchmarks=[math-500,gpqa:{bad}]"]))
    with pytest.raises(ConfigError, match=r"eval.benchmarks: benchmark 'gpqa': /nowhere/gpqa.csv not found"):
        validate(compose(["eval.benchmarks=[gpqa:/nowhere/gpqa.csv]"]))
    with pytest.raises(ConfigError, match=r"'gpqa' does not ship: point eval.benchmarks at your copy"):
        validate(compose(["eval.benchmarks=[gpqa]"]))
    good = _gpqa_csv(tmp_path / "good.csv")
    assert validate(compose([f"eval.benchmarks=[math-500,gpqa:{good}]"])).eval.benchmarks[1] == f"gpqa:{good}"
    # the prompt exists for the Qwen chat format and the zero-shot protocol the paper used
    with pytest.raises(ConfigError, match=r"model.eval_template=deepseek-math: gpqa is prompted as the paper's"):
        validate(compose([f"eval.benchmarks=[gpqa:{good}]", "model.eval_template=deepseek-math"]))
    with pytest.raises(ConfigError, match=r"eval.protocol=few-shot-cot: gpqa is evaluated zero-shot"):
        validate(compose([f"eval.benchmarks=[gpqa:{good}]", "eval.protocol=few-shot-cot", "eval.shots=4"]))
