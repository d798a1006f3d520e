"""AceMath-Instruct-Training-Data (nvidia, arXiv 2412.15084): the SFT data of the CFT paper's
"CFT + AceMath SFT" rows (conf/experiment/cft-acemath*.yaml).

Each row is `messages`, the conversation so far as [{role, content}] (the math split's rows are
one user turn), and `answer`, the assistant's reply: written by Qwen2.5-Math-72B-Instruct for the
math prompts, its final answer in \\boxed{}. Splits: general_sft_stage1 (2.26M rows),
general_sft_stage2 (1.63M), math_sft (1.66M); conf/dataset/acemath.yaml reads math_sft.

The reply is the SFT target (the record's `noisy_response`); nobody checked it against a
reference, so `response_correct` is unknown and `method.keep=verified` keeps none of it.
"""
from __future__ import annotations

from typing import Iterator

from cft.datasets import _hub_rows, loader
from cft.io import DataError
from cft.records import UNKNOWN, Record


def question_of(messages, where: str) -> str:
    """The user turn of a single-turn conversation. A multi-turn one (the general splits have
    them) cannot be a (question -> response) pair without dropping context, so it is an error
    naming the row rather than a silently shortened prompt."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise DataError(f"{where}: `messages` is not a list of {{role, content}} objects")
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) != 1 or turns[0].get("role") != "user" or not isinstance(turns[0].get("content"), str):
        roles = [m.get("role") for m in messages]
        raise DataError(f"{where}: `messages` must be one user turn (roles {roles}); multi-turn rows are "
                        f"not (question -> response) pairs: use dataset.split=math_sft")
    if len(turns) != len(messages):
        raise DataError(f"{where}: `messages` has a system turn, which a (question -> response) "
                        f"pair would drop")
    return turns[0]["content"]


@loader("acemath")
def load_acemath(cfg) -> Iterator[Record]:
    """AceMath SFT rows as records: question = the user turn, noisy_response = `answer`. No
    reference answer: the reply is a model's, not a ground truth to check other responses by."""
    where = cfg.path or f"{cfg.hf_path}:{cfg.split}"
    for i, row in enumerate(_hub_rows(cfg)):
        at = f"{where}: row {i + 1}"
        if not isinstance(row.get("answer"), str) or not row["answer"].strip():
            raise DataError(f"{at}: missing or empty string field 'answer'")
        yield Record(
            id=f"acemath-{i}", question=question_of(row.get("messages"), at),
            reference_answer=None, reference_solution=None, noisy_response=row["answer"],
            noisy_source=f"acemath:{cfg.split}", response_correct=UNKNOWN,
        )
