"""What each method shows the model, pinned against the paper's training code (LLaMA-Factory at
3c55976a0): golden prompt/target strings per model, exact ids and label masks, truncation.

tests/golden/train_format.json holds the exact strings for a reviewer; regenerate it only on
purpose (`python tests/test_format.py --write`) and read the diff.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cft.datasets import _WEBINSTRUCT_INPUT
from cft.templates import eval_prompt, render
from cft.train.format import IGNORE_INDEX, example, infer_seqlen, prepare_tokenizer, prompt_ids, tokenize

GOLDEN = Path(__file__).parent / "golden" / "train_format.json"
# One released WebInstruct-CFT row, in the released layout (instruction ends "\n\n", input "\n").
RELEASED = json.loads((Path(__file__).parent / "golden" / "webinstruct_cft_row.json").read_text())
ROW = {
    "id": "P_1|GPT-4|0-Shot",
    "question": "What is $1+1$?",
    "noisy_response": "1+1 = 3, so the answer is $\\boxed{3}$.",
    "critique": "The sum is wrong: 1+1=2.\nConclusion: wrong [END]",
    "teacher_solution": "1+1=2. The final answer is $\\boxed{2}$.",
}
METHOD_TARGETS = {"cft": "critique", "sft": "response", "sft-verified": "response",
                  "sft-teacher": "teacher_solution"}
# Each paper model: its train template (conf/model/*.yaml) and its tokenizer's BOS/EOS text
# (tokenizer_config.json of the hub repo).
MODELS = {
    "qwen2.5-math-7b": ("qwen", None, "<|endoftext|>"),
    "qwen2.5-7b": ("qwen", None, "<|endoftext|>"),
    "deepseek-math": ("qwen", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "qwen2.5-32b-instruct": ("qwen", None, "<|im_end|>"),
    "deepseek-template": ("deepseek", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}


def released_row() -> dict:
    """The released row as the data stage stores it (the loader keeps instruction/input verbatim)."""
    m = _WEBINSTRUCT_INPUT.match(RELEASED["input"])
    return {"id": "webinstruct-0", "question": m["q"], "noisy_response": m["r"].removesuffix("\n"), "critique": RELEASED["output"],
            "extra": {"instruction": RELEASED["instruction"], "input": RELEASED["input"]}}


def rendered() -> dict:
    out = {}
    for model, (template, bos, eos) in MODELS.items():
        out[f"released-cft/{model}"] = list(render(example(released_row(), "critique"), template, bos, eos))
        for method, target in METHOD_TARGETS.items():
            out[f"{method}/{model}"] = list(render(example(ROW, target), template, bos, eos))
    return out


def test_rendered_examples_match_golden():
    assert rendered() == json.loads(GOLDEN.read_text())


def test_released_row_is_rendered_verbatim_with_llamafactory_join():
    """LLaMA-Factory's user turn is instruction + "\\n" + input: three newlines before Question."""
    prompt, target = render(example(released_row(), "critique"), "qwen", None, "<|endoftext|>")
    assert "is correct.\n\n\nQuestion:\n" in prompt
    assert prompt.endswith(RELEASED["input"] + "<|im_end|>\n<|im_start|>assistant\n")
    assert target == RELEASED["output"] + "<|endoftext|>"


def test_our_cft_rows_are_built_like_the_released_ones():
    ours = example({"id": "x", "question": "What is 2+2?", "noisy_response": "2+2=5.", "critique": "c"}, "critique")
    theirs = example({"id": "y", "question": "?", "noisy_response": "?", "critique": "c",
                      "extra": {"instruction": RELEASED["instruction"],
                                "input": "Question:\nWhat is 2+2?\n\nSolution:\n2+2=5.\n"}}, "critique")
    assert ours["prompt"] == theirs["prompt"]


@pytest.mark.parametrize("method", METHOD_TARGETS)
def test_ids_and_label_mask_follow_llamafactory(tiny_tokenizer, method):
    """Prompt = system and user segments tokenized apart, all masked; target = content ids + the
    eos id, all trained on."""
    ex = example(ROW, METHOD_TARGETS[method])
    feats = tokenize(ex, tiny_tokenizer, "qwen", cutoff_len=4096)
    enc = lambda s: tiny_tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt_ids = enc("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n") + \
        enc(f"<|im_start|>user\n{ex['prompt']}<|im_end|>\n<|im_start|>assistant\n")
    target_ids = enc(ex["target"]) + [tiny_tokenizer.eos_token_id]
    assert feats["input_ids"] == prompt_ids + target_ids
    assert feats["labels"] == [IGNORE_INDEX] * len(prompt_ids) + target_ids
    assert not feats["truncated"]


def test_deepseek_template_prepends_bos_and_qwen_does_not(tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, bos_token="<|im_start|>",
                                   eos_token=tiny_tokenizer.eos_token, pad_token=tiny_tokenizer.pad_token)
    ex = example(ROW, "critique")
    assert tokenize(ex, tok, "deepseek", 4096)["input_ids"][0] == tok.bos_token_id
    assert tokenize(ex, tok, "qwen", 4096)["input_ids"][:2] != [tok.bos_token_id] * 2


def test_qwen_template_adds_im_end_when_the_tokenizer_lacks_it(tiny_tokenizer):
    """DeepSeek-Math under the qwen template: LLaMA-Factory adds `<|im_end|>` as a special token."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.WordLevel({"a": 0, "<unk>": 1, "</s>": 2}, unk_token="<unk>"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=bare, eos_token="</s>")
    assert prepare_tokenizer(tok, "qwen") == 1
    assert tok("a<|im_end|>", add_special_tokens=False)["input_ids"] == [0, 3]  # one token, not split
    assert tok.pad_token == "</s>"  # pad = eos when unset, as LLaMA-Factory does
    assert prepare_tokenizer(tiny_tokenizer, "qwen") == 0  # already has it


@pytest.mark.parametrize("source,target,cutoff,expected", [
    (100, 400, 128, (26, 102)),   # both over half: budget split 100:400 -> int(128 * 0.8) = 102
    (10, 400, 128, (10, 118)),    # short prompt kept whole, target gets the rest
    (400, 30, 128, (98, 30)),     # short target kept whole, prompt head gets the rest
    (50, 50, 128, (50, 50)),      # fits
])
def test_truncation_is_llamafactory_infer_seqlen(source, target, cutoff, expected):
    assert infer_seqlen(source, target, cutoff) == expected


def test_truncated_pair_splits_the_budget_in_proportion(tiny_tokenizer):
    ex = {"id": "x", "prompt": "word " * 100, "target": "answer " * 400}
    feats = tokenize(ex, tiny_tokenizer, "qwen", cutoff_len=128)
    n_target = sum(l != IGNORE_INDEX for l in feats["labels"])
    n_prompt_full = len(prompt_ids(tiny_tokenizer, "qwen", ex["prompt"]))
    n_target_full = len(tiny_tokenizer(ex["target"], add_special_tokens=False)["input_ids"]) + 1  # + eos
    assert n_prompt_full * 2 > 128 and n_target_full * 2 > 128  # the proportional branch
    assert len(feats["input_ids"]) == 128 and feats["truncated"]
    assert (128 - n_target, n_target) == infer_seqlen(n_prompt_full, n_target_full, 128)


def test_eval_prompts_are_the_papers_byte_for_byte():
    assert eval_prompt("qwen25-math-cot", "Q?") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
        "<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
    assert eval_prompt("deepseek-math", "Q?") == (
        "User: Q?\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:")
    with pytest.raises(KeyError, match="model.eval_template"):
        eval_prompt("alpaca", "Q?")


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.write_text(json.dumps(rendered(), indent=1, ensure_ascii=False) + "\n")
