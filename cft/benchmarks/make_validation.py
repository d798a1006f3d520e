"""How `data/math-validation/test.jsonl` was made: 500 MATH *train* problems, none of which shares
a word 8-gram with any shipped test set, for checkpoint selection (`eval.select_benchmark`).

    python -m cft.benchmarks.make_validation MATH_TRAIN.jsonl cft/benchmarks/data/math-validation/test.jsonl

MATH_TRAIN.jsonl is the 7,500-problem MATH train split, one JSON object per line with `problem`
and `answer` (the source named in data/README.md). Lines are copied verbatim, in the order of a
seeded shuffle, so the first k lines (`eval.select_limit=k`) are themselves a random sample.
The 8-gram rule is the one the data stage's decontamination report uses (open-instruct's).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from cft.benchmarks import BENCHMARKS, SHIPPED, words

SIZE, SEED, NGRAM = 500, 0, 8
# The test sets whose 8-grams the shipped file was built against. AIME25 came later and is left
# out so that the recipe still rebuilds that file: it shares one phrase 8-gram ("let triangle
# abc be a right triangle with") with problem 221, and no problem.
RECIPE_TEST_SETS = ("math", "math-500", "minerva_math", "gsm8k", "olympiadbench", "aime24", "amc23", "theoremqa")


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)}


def benchmark_ngrams(root: Path = SHIPPED) -> set[tuple[str, ...]]:
    """Every 8-gram of the questions of the test sets in RECIPE_TEST_SETS."""
    grams: set = set()
    for name in RECIPE_TEST_SETS:
        for item in BENCHMARKS[name].load(root):
            grams |= ngrams(item["question"])
    return grams


def validation_lines(source_lines: list[str], size: int = SIZE, seed: int = SEED) -> list[str]:
    """`size` source lines whose problems share no 8-gram with a test set, in a seeded order."""
    banned = benchmark_ngrams()
    clean = [line for line in source_lines if not ngrams(json.loads(line)["problem"]) & banned]
    return random.Random(seed).sample(clean, size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    lines = [line + "\n" for line in args.source.read_text(encoding="utf-8").split("\n") if line.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(validation_lines(lines)), encoding="utf-8")


if __name__ == "__main__":
    main()
