"""MATH as the paper evaluates it, and a selection split that no reported number is computed on.

`math` is the official evaluation's 5,000-problem MATH test (byte for byte its file), MATH-500 is
a subset of it, and the default selection set shares no problem with any shipped test set.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re

import pytest

from cft.benchmarks import BENCHMARKS, PAPER_BENCHMARKS, SELECTION_SETS, SHIPPED, USER_SUPPLIED, get_benchmark
from cft.benchmarks.make_validation import benchmark_ngrams, ngrams, validation_lines
from cft.io import read_jsonl
from cft.validation import ConfigError, validate

# The git blob ids (SHA-1 of "blob <size>\0" + content) of the upstream files: equal ids, equal bytes.
UPSTREAM_BLOBS = {
    # QwenLM/Qwen2.5-Math evaluation/data/math/test.jsonl = CritiqueFineTuning@44b83b8
    # tools/evaluate_math/data/math/test.jsonl = One-Shot-CFT's eval/.../data/math/test.jsonl
    "math": "9ef3334841057f53caac5522332e38391d3fb33b",
    # TIGER-AI-Lab/One-Shot-CFT eval/Math_Reasoning_Evaluation/data/math-500-validation/test.jsonl
    "math-500-validation": "c12428312410765b9107f2d0bc7949383efea8fb",
    # TIGER-AI-Lab/One-Shot-CFT@296d620 eval/Math_Reasoning_Evaluation/data/aime25/test.jsonl: the
    # 30 problems repeated 32 times (its avg@32); the shipped file is one copy of them
    "aime25": "2d0384bd2af8064b849b8ddf556a8e53c745d863",
}
REPEATS = {"aime25": 32}
TEST_SETS = [name for name in BENCHMARKS if name not in SELECTION_SETS + USER_SUPPLIED]


def _rows(name: str) -> list[dict]:
    return read_jsonl(BENCHMARKS[name].path(SHIPPED))


def _text(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().lower()


def _questions(name: str) -> set[str]:
    return {_text(item["question"]) for item in BENCHMARKS[name].load(SHIPPED)}


@pytest.mark.parametrize("name", sorted(UPSTREAM_BLOBS))
def test_shipped_files_are_the_upstream_files(name):
    path = BENCHMARKS[name].path(SHIPPED)
    data = (gzip.decompress if path.suffix == ".gz" else bytes)(path.read_bytes()) * REPEATS.get(name, 1)
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == UPSTREAM_BLOBS[name]


def test_math_ships_gzipped():
    """The 4.4 MB MATH test is stored gzipped (about a quarter of the size); its content is the
    upstream file's (above), and it loads as the plain file would."""
    path = BENCHMARKS["math"].path(SHIPPED)
    assert path.name == "test.jsonl.gz" and not (SHIPPED / "math" / "test.jsonl").exists()
    assert path.stat().st_size < 0.3 * len(gzip.decompress(path.read_bytes()))


def test_math500_is_a_subset_of_math():
    math = {r["problem"]: r for r in _rows("math")}
    math500 = _rows("math-500")
    assert len(math) == 5000 and len(math500) == 500
    assert all(r["problem"] in math for r in math500)  # the same problem text, byte for byte
    assert all(math[r["problem"]]["unique_id"] == r["unique_id"] for r in math500)
    # graded alike: MATH's reference (the solution's last \boxed{}) is MATH-500's `answer` string
    refs = {it["question"]: it["reference"] for it in get_benchmark("math").load(SHIPPED)}
    assert sum(refs[r["problem"]] == r["answer"] for r in math500) == 500


def test_math_means_the_5000_problem_test_and_math500_its_subset():
    assert get_benchmark("math").name == get_benchmark("MATH").name == "math"
    assert {get_benchmark(s).name for s in ("math500", "math-500", "MATH-500", "math_500")} == {"math-500"}
    assert PAPER_BENCHMARKS[0] == "math" and "math-500" not in PAPER_BENCHMARKS
    # the official grading of `math` reads the solution, not the `answer` field, which is
    # damaged in one row (test/prealgebra/177: a sentence of the solution instead of 12)
    items, rows = get_benchmark("math").load(SHIPPED), _rows("math")
    assert all(it["reference"] for it in items)
    assert [r["unique_id"] for it, r in zip(items, rows) if it["reference"] != r["answer"]
            and r["answer"].strip() != it["reference"]] == ["test/prealgebra/177.json"]


def test_the_selection_set_shares_no_problem_with_any_test_set():
    validation = BENCHMARKS["math-validation"].load(SHIPPED)
    assert len(validation) == 500 and all(it["reference"] for it in validation)
    texts = {_text(it["question"]) for it in validation}
    for name in TEST_SETS:
        assert not texts & _questions(name), name
    # nor a word 8-gram (the data stage's decontamination rule), against every test set at once
    banned = benchmark_ngrams()
    assert not [it["idx"] for it in validation if ngrams(it["question"]) & banned]


def test_one_shot_cfts_selection_set_is_disjoint_from_math500_and_inside_math():
    one_shot = _questions("math-500-validation")
    assert len(one_shot) == 500 and one_shot <= _questions("math")
    assert all(not one_shot & _questions(name) for name in TEST_SETS if name != "math")


def test_the_validation_recipe_is_seeded_and_drops_overlapping_problems():
    """make_validation on a stand-in source: a MATH-500 problem never enters, the draw repeats."""
    leak = json.dumps({"problem": _rows("math-500")[0]["problem"], "answer": "x"}) + "\n"
    fresh = [json.dumps({"problem": f"Compute zorbl {i} plus quux {i} times blarg {i}.", "answer": str(i)}) + "\n"
             for i in range(30)]
    picked = validation_lines([leak, *fresh], size=10)
    assert leak not in picked and len(set(picked)) == 10
    assert picked == validation_lines([leak, *fresh], size=10)


def test_selection_defaults_to_the_held_out_split(compose):
    for overrides in ([], ["eval=paper"], ["model=qwen2.5-math-7b"]):
        assert compose(overrides).eval.select_benchmark == "math-validation"
    paper = compose(["model=qwen2.5-math-7b", "eval=paper"])
    assert list(paper.eval.benchmarks) == PAPER_BENCHMARKS and paper.eval.select_checkpoint
    # the paper's exact protocol is one override away, in any usual spelling
    exact = compose(["model=qwen2.5-math-7b", "eval=paper", "eval.select_benchmark=math500"])
    assert get_benchmark(validate(exact).eval.select_benchmark).name == "math-500"
    # the CPU default stays a slice of MATH-500
    assert (list(compose([]).eval.benchmarks), compose([]).eval.limit) == (["math-500"], 8)


def test_a_selection_set_cannot_be_misspelt(compose):
    with pytest.raises(ConfigError, match="eval.select_benchmark: unknown benchmark 'math-valid'"):
        validate(compose(["eval.select_checkpoint=true", "eval.select_benchmark=math-valid"]))
