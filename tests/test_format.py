"""What each method shows the model: golden prompts/targets and exact label masks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft.eval.prompts import eval_prompt
from cft.train.format import IGNORE_INDEX, example, render, tokenize

GOLDEN = Path(__file__).parent / "golden" / "train_format.json"
ROW = {
    "id": "P_1|GPT-4|0-Shot",
    "question": "What is $1+1$?",
    "noisy_response": "1+1 = 3, so the answer is $\\boxed{3}$.",
    "critique": "The sum is wrong: 1+1=2.\nConclusion: wrong [END]",
    "teacher_solution": "1+1=2. The final answer is $\\boxed{2}$.",
}
METHOD_TARGETS = {"cft": "critique", "sft": "response", "sft-verified": "response",
                  "sft-teacher": "teacher_solution"}


def rendered() -> dict:
    return {f"{method}/{template}": list(render(example(ROW, target), template))
            for method, target in METHOD_TARGETS.items() for template in ("qwen", "deepseek")}


def test_rendered_examples_match_golden():
    assert rendered() == json.loads(GOLDEN.read_text())


def test_cft_prompt_holds_question_and_noisy_response_and_target_is_critique():
    prompt, target = render(example(ROW, "critique"), "qwen")
    assert ROW["question"] in prompt and ROW["noisy_response"] in prompt
    assert target == ROW["critique"] + "<|im_end|>"
    sft_prompt, sft_target = render(example(ROW, "response"), "qwen")
    assert ROW["noisy_response"] not in sft_prompt and sft_target.startswith(ROW["noisy_response"])


@pytest.mark.parametrize("method", METHOD_TARGETS)
def test_label_mask_covers_exactly_the_target(tiny_tokenizer, method):
    ex = example(ROW, METHOD_TARGETS[method])
    feats = tokenize(ex, tiny_tokenizer, "qwen", cutoff_len=4096)
    prompt, target = render(ex, "qwen")
    n_prompt = len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert feats["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert IGNORE_INDEX not in feats["labels"][n_prompt:]
    assert tiny_tokenizer.decode(feats["labels"][n_prompt:]) == target
    assert tiny_tokenizer.decode(feats["input_ids"]) == prompt + target


def test_truncation_keeps_prompt_head_and_some_target(tiny_tokenizer):
    ex = {"id": "x", "prompt": "word " * 400, "target": "answer " * 400}
    feats = tokenize(ex, tiny_tokenizer, "qwen", cutoff_len=128)
    assert len(feats["input_ids"]) == 128 and feats["truncated"]
    n_target = sum(l != IGNORE_INDEX for l in feats["labels"])
    assert n_target == 64


def test_eval_prompts_are_the_papers_byte_for_byte():
    assert eval_prompt("qwen25-math-cot", "Q?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
    assert eval_prompt("deepseek-math", "Q?") == (
        "User: Q?\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:")
    with pytest.raises(KeyError, match="model.eval_template"):
        eval_prompt("alpaca", "Q?")
